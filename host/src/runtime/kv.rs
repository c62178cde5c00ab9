//! `wasi:keyvalue/store` backed by the engine's [`KeyValue`] service, which
//! is already scoped to the run's tenant. A bucket identifier is only a
//! namespace inside that tenant.

use wasmtime::component::Resource;

use super::bindings::wasi::keyvalue::store::{self, Error, KeyResponse};
use super::sandbox::Sandbox;
use super::services::{KV_PAGE, MAX_KV_KEY_BYTES, MAX_KV_VALUE_BYTES};

/// Longest bucket name.
const MAX_BUCKET_NAME: usize = 128;

/// An open bucket: just its name, the tenant is implied by the services.
pub struct BucketHandle {
    name: String,
}

impl Sandbox {
    fn kv_allowed(&self) -> Result<(), Error> {
        if self.context.is_none() || !self.grants.kv {
            return Err(Error::AccessDenied);
        }
        Ok(())
    }

    fn bucket_name(&self, bucket: &Resource<BucketHandle>) -> Result<String, Error> {
        self.table
            .get(bucket)
            .map(|b| b.name.clone())
            .map_err(|e| Error::Other(e.to_string()))
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KV_KEY_BYTES {
        return Err(Error::Other(format!(
            "keys must be 1 to {MAX_KV_KEY_BYTES} bytes, this one is {}",
            key.len()
        )));
    }
    Ok(())
}

impl store::Host for Sandbox {
    async fn open(&mut self, identifier: String) -> Result<Resource<BucketHandle>, Error> {
        self.kv_allowed()?;
        let name = match identifier.as_str() {
            "" => "default".to_owned(),
            other => other.to_owned(),
        };
        if name.len() > MAX_BUCKET_NAME || name.chars().any(char::is_control) {
            return Err(Error::Other(format!(
                "bucket names are at most {MAX_BUCKET_NAME} bytes without control characters"
            )));
        }
        self.table
            .push(BucketHandle { name })
            .map_err(|e| Error::Other(e.to_string()))
    }
}

impl store::HostBucket for Sandbox {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> Result<Option<Vec<u8>>, Error> {
        self.kv_allowed()?;
        check_key(&key)?;
        let name = self.bucket_name(&bucket)?;
        self.services
            .kv
            .get(&name, &key)
            .await
            .map_err(Error::Other)
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        self.kv_allowed()?;
        check_key(&key)?;
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(Error::Other(format!(
                "values are at most {MAX_KV_VALUE_BYTES} bytes, this one is {}",
                value.len()
            )));
        }
        let name = self.bucket_name(&bucket)?;
        self.services
            .kv
            .set(&name, &key, &value)
            .await
            .map_err(Error::Other)
    }

    async fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<(), Error> {
        self.kv_allowed()?;
        check_key(&key)?;
        let name = self.bucket_name(&bucket)?;
        self.services
            .kv
            .delete(&name, &key)
            .await
            .map_err(Error::Other)
    }

    async fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<bool, Error> {
        self.kv_allowed()?;
        check_key(&key)?;
        let name = self.bucket_name(&bucket)?;
        self.services
            .kv
            .exists(&name, &key)
            .await
            .map_err(Error::Other)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> Result<KeyResponse, Error> {
        self.kv_allowed()?;
        let name = self.bucket_name(&bucket)?;
        let offset = cursor.unwrap_or(0);
        let keys = self
            .services
            .kv
            .list_keys(&name, offset, KV_PAGE)
            .await
            .map_err(Error::Other)?;
        let cursor = (keys.len() == KV_PAGE).then(|| offset + KV_PAGE as u64);
        Ok(KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
