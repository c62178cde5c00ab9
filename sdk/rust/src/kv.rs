//! The tenant's key-value store, through `wasi:keyvalue/store`.
//!
//! Data lives in the host's database, scoped to the run's tenant: a plugin
//! can neither see nor name another tenant's keys.
//!
//! ```no_run
//! let bucket = weft_sdk::kv::Bucket::default_bucket()?;
//! bucket.set_json("counter", &1)?;
//! let n: Option<u64> = bucket.get_json("counter")?;
//! # Ok::<(), weft_sdk::kv::KvError>(())
//! ```

use serde::{Serialize, de::DeserializeOwned};

use crate::bindings::wasi::keyvalue::store;

/// A key-value failure, with the store's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key-value store: {}", self.0)
    }
}

impl std::error::Error for KvError {}

impl From<store::Error> for KvError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NoSuchStore => Self("no such store".into()),
            store::Error::AccessDenied => Self("access denied".into()),
            store::Error::Other(m) => Self(m),
        }
    }
}

/// A key with its value parsed as JSON, or why it is not JSON.
pub type JsonRecord = (String, Result<serde_json::Value, String>);

impl From<KvError> for crate::StepError {
    fn from(e: KvError) -> Self {
        crate::StepError::retryable(e.to_string())
    }
}

/// An open bucket of the tenant's store.
pub struct Bucket(store::Bucket);

impl Bucket {
    /// The tenant's default bucket.
    pub fn default_bucket() -> Result<Self, KvError> {
        Self::open("default")
    }

    /// A named bucket of the tenant's store.
    pub fn open(name: &str) -> Result<Self, KvError> {
        Ok(Self(store::open(name)?))
    }

    /// The bucket a step's optional `bucket` config names, or the default.
    pub fn named_or_default(name: Option<&str>) -> Result<Self, KvError> {
        match name {
            Some(name) => Self::open(name),
            None => Self::default_bucket(),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.0.get(key)?)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        Ok(self.0.set(key, value)?)
    }

    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        Ok(self.0.delete(key)?)
    }

    pub fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.0.exists(key)?)
    }

    /// The value at `key` parsed as JSON; an unparsable value is an error
    /// naming the key.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, KvError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| KvError(format!("value at {key:?} is not the expected JSON: {e}"))),
        }
    }

    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), KvError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KvError(e.to_string()))?;
        self.set(key, &bytes)
    }

    /// Every key in the bucket, in the store's order, fetched page by page.
    pub fn keys(&self) -> Result<Vec<String>, KvError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.0.list_keys(cursor)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Every key starting with `prefix`.
    pub fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let mut keys = self.keys()?;
        keys.retain(|k| k.starts_with(prefix));
        Ok(keys)
    }

    /// Every record under `prefix`, sorted by key: each key with its value
    /// parsed as JSON, or with the reason it is not JSON so the caller can
    /// report it and go on. A store failure fails the whole call; a key
    /// deleted between listing and reading is left out.
    pub fn json_with_prefix(&self, prefix: &str) -> Result<Vec<JsonRecord>, KvError> {
        let mut keys = self.keys_with_prefix(prefix)?;
        keys.sort();
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(bytes) = self.get(&key)? else {
                continue;
            };
            let value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"));
            records.push((key, value));
        }
        Ok(records)
    }
}
