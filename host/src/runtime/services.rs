//! What the host offers a running step, as traits the engine implements.
//!
//! The runtime never touches the database: key-value data, the mail outbox,
//! notifications, files and secrets reach it through these traits, each instance already
//! scoped to one tenant by whoever built it. A guest can only name keys,
//! files and secrets; it can never name a tenant.
//!
//! The in-memory implementations here back `weft plugin run` (the author's
//! local loop) and the runtime's own tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

/// Largest key the key-value store accepts, in bytes.
pub const MAX_KV_KEY_BYTES: usize = 1024;
/// Largest value the key-value store accepts, in bytes.
pub const MAX_KV_VALUE_BYTES: usize = 1 << 20;
/// Keys per `list-keys` page.
pub const KV_PAGE: usize = 1000;

/// A tenant's key-value store. Buckets are namespaces within the tenant.
#[async_trait]
pub trait KeyValue: Send + Sync {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), String>;
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), String>;
    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, String>;
    /// Up to `limit` keys in ascending order, starting after the first
    /// `offset` keys.
    async fn list_keys(
        &self,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, String>;
}

/// A message handed to the mail capability.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutgoingMail {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// A tenant's mail outbox.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Queues `mail` under `key` and returns its message id. A key that was
    /// seen before returns the first message's id and queues nothing.
    async fn send(&self, key: &str, mail: OutgoingMail) -> Result<String, String>;
}

/// An in-app notification handed to the notify capability.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutgoingNotification {
    pub title: String,
    pub body: String,
    pub level: String,
    pub audience: String,
    pub link: String,
}

/// A tenant's in-app notifications.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Records `notification` under `key` and returns its id; a key seen
    /// before returns the first notification's id and records nothing.
    async fn notify(&self, key: &str, notification: OutgoingNotification)
    -> Result<String, String>;
}

/// A tenant's uploaded files.
#[async_trait]
pub trait Files: Send + Sync {
    /// The file's bytes, or an error naming the problem. Files larger than
    /// `max_bytes` are refused rather than truncated.
    async fn read(&self, file_id: &str, max_bytes: usize) -> Result<Vec<u8>, String>;
}

/// A tenant's secrets.
#[async_trait]
pub trait Secrets: Send + Sync {
    async fn get(&self, name: &str) -> Option<String>;
}

/// Where an attempt's progress reports go while it runs (logs are returned
/// with the attempt).
pub trait Progress: Send + Sync {
    fn progress(&self, percent: u8, note: &str);
}

/// Everything host-side that one attempt may use, scoped to its tenant.
#[derive(Clone)]
pub struct Services {
    pub kv: Arc<dyn KeyValue>,
    pub mail: Arc<dyn Mailer>,
    pub notifications: Arc<dyn Notifier>,
    pub files: Arc<dyn Files>,
    pub secrets: Arc<dyn Secrets>,
    pub progress: Arc<dyn Progress>,
}

impl Services {
    /// Fresh in-memory services: what `weft plugin run` uses.
    pub fn in_memory() -> (Services, MemoryServices) {
        let memory = MemoryServices::default();
        (memory.services(), memory)
    }
}

/// In-memory services, kept so a caller can show what a plugin did.
#[derive(Clone, Default)]
pub struct MemoryServices {
    pub kv: Arc<MemoryKeyValue>,
    pub outbox: Arc<MemoryOutbox>,
    pub notifications: Arc<MemoryNotifications>,
    pub files: Arc<MemoryFiles>,
    pub secrets: Arc<MemorySecrets>,
    pub progress: Arc<MemoryProgress>,
}

impl MemoryServices {
    pub fn services(&self) -> Services {
        Services {
            kv: self.kv.clone(),
            mail: self.outbox.clone(),
            notifications: self.notifications.clone(),
            files: self.files.clone(),
            secrets: self.secrets.clone(),
            progress: self.progress.clone(),
        }
    }
}

#[derive(Default)]
pub struct MemoryKeyValue {
    /// (bucket, key) → value, ordered so listing is stable.
    pub entries: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

#[async_trait]
impl KeyValue for MemoryKeyValue {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(lock(&self.entries)
            .get(&(bucket.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), String> {
        lock(&self.entries).insert((bucket.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), String> {
        lock(&self.entries).remove(&(bucket.to_owned(), key.to_owned()));
        Ok(())
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, String> {
        Ok(lock(&self.entries).contains_key(&(bucket.to_owned(), key.to_owned())))
    }

    async fn list_keys(
        &self,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, String> {
        Ok(lock(&self.entries)
            .keys()
            .filter(|(b, _)| b == bucket)
            .skip(offset as usize)
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect())
    }
}

#[derive(Default)]
pub struct MemoryOutbox {
    /// (key, message id, message) in the order they were queued.
    pub messages: Mutex<Vec<(String, String, OutgoingMail)>>,
}

#[async_trait]
impl Mailer for MemoryOutbox {
    async fn send(&self, key: &str, mail: OutgoingMail) -> Result<String, String> {
        let mut messages = lock(&self.messages);
        if let Some((_, id, _)) = messages.iter().find(|(k, _, _)| k == key) {
            return Ok(id.clone());
        }
        let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        messages.push((key.to_owned(), id.clone(), mail));
        Ok(id)
    }
}

#[derive(Default)]
pub struct MemoryNotifications {
    /// (key, id, notification) in the order they were recorded.
    pub items: Mutex<Vec<(String, String, OutgoingNotification)>>,
}

#[async_trait]
impl Notifier for MemoryNotifications {
    async fn notify(
        &self,
        key: &str,
        notification: OutgoingNotification,
    ) -> Result<String, String> {
        let mut items = lock(&self.items);
        if let Some((_, id, _)) = items.iter().find(|(k, _, _)| k == key) {
            return Ok(id.clone());
        }
        let id = format!("ntf_{}", uuid::Uuid::now_v7().simple());
        items.push((key.to_owned(), id.clone(), notification));
        Ok(id)
    }
}

#[derive(Default)]
pub struct MemoryFiles {
    pub files: Mutex<BTreeMap<String, Vec<u8>>>,
}

#[async_trait]
impl Files for MemoryFiles {
    async fn read(&self, file_id: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
        let files = lock(&self.files);
        let bytes = files
            .get(file_id)
            .ok_or_else(|| format!("no file with id {file_id:?}"))?;
        if bytes.len() > max_bytes {
            return Err(format!(
                "file {file_id:?} is {} bytes, over the {max_bytes}-byte limit",
                bytes.len()
            ));
        }
        Ok(bytes.clone())
    }
}

#[derive(Default)]
pub struct MemorySecrets {
    pub values: Mutex<BTreeMap<String, String>>,
}

#[async_trait]
impl Secrets for MemorySecrets {
    async fn get(&self, name: &str) -> Option<String> {
        lock(&self.values).get(name).cloned()
    }
}

#[derive(Default)]
pub struct MemoryProgress {
    pub reports: Mutex<Vec<(u8, String)>>,
}

impl Progress for MemoryProgress {
    fn progress(&self, percent: u8, note: &str) {
        lock(&self.reports).push((percent, note.to_owned()));
    }
}

/// A poisoned lock only means another thread panicked mid-update of a map of
/// plain values; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
