//! Host services backed by the database, each scoped to one tenant (and,
//! for the outbox, one attempt's step), handed to the runtime per attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use tokio::sync::mpsc::UnboundedSender;

use super::scheduler::ToRecord;
use super::secrets::SecretBox;
use crate::db::{self, Db};
use crate::runtime::Services;
use crate::runtime::services::{
    Files, KeyValue, Mailer, Notifier, OutgoingMail, OutgoingNotification, Progress, Secrets,
};

/// Progress reports closer together than this are dropped (the last one of
/// an attempt always lands in its result anyway).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The services of one attempt at `step_id`; its progress reports go to
/// the recorder, which writes them with its next batch.
pub(crate) fn for_attempt(
    db: &Db,
    recorder: &UnboundedSender<ToRecord>,
    secrets: Option<Arc<SecretBox>>,
    tenant: &str,
    run_id: &str,
    step_id: &str,
) -> Services {
    scoped(db, Some(recorder.clone()), secrets, tenant, run_id, step_id)
}

/// [`for_attempt`] for one item of a `for_each` step (`step_id` names the
/// item, `step[index]`): the same services, but the item's progress
/// reports are dropped, since the step reports its items' counts itself.
pub(crate) fn for_item(
    db: &Db,
    secrets: Option<Arc<SecretBox>>,
    tenant: &str,
    run_id: &str,
    step_id: &str,
) -> Services {
    scoped(db, None, secrets, tenant, run_id, step_id)
}

fn scoped(
    db: &Db,
    recorder: Option<UnboundedSender<ToRecord>>,
    secrets: Option<Arc<SecretBox>>,
    tenant: &str,
    run_id: &str,
    step_id: &str,
) -> Services {
    let scope = Arc::new(Scope {
        db: db.clone(),
        recorder,
        secrets,
        tenant: tenant.to_owned(),
        run_id: run_id.to_owned(),
        step_id: step_id.to_owned(),
        last_progress: Mutex::new(None),
    });
    Services {
        kv: scope.clone(),
        mail: scope.clone(),
        notifications: scope.clone(),
        files: scope.clone(),
        secrets: scope.clone(),
        progress: scope,
    }
}

struct Scope {
    db: Db,
    /// Where progress reports go; none drops them.
    recorder: Option<UnboundedSender<ToRecord>>,
    secrets: Option<Arc<SecretBox>>,
    tenant: String,
    run_id: String,
    step_id: String,
    last_progress: Mutex<Option<Instant>>,
}

fn err(e: db::DbError) -> String {
    tracing::warn!(error = %e, "host service database error");
    "the host's store is unavailable; try again".to_owned()
}

#[async_trait]
impl KeyValue for Scope {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let mut conn = self.db.reader().await.map_err(err)?;
        db::state::kv_get(&mut conn, &self.tenant, bucket, key)
            .await
            .map_err(err)
    }

    async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), String> {
        let mut conn = self.db.writer().await.map_err(err)?;
        db::state::kv_set(&mut conn, &self.tenant, bucket, key, value, db::now_ms())
            .await
            .map_err(err)
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), String> {
        let mut conn = self.db.writer().await.map_err(err)?;
        db::state::kv_delete(&mut conn, &self.tenant, bucket, key)
            .await
            .map_err(err)
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, String> {
        Ok(KeyValue::get(self, bucket, key).await?.is_some())
    }

    async fn list_keys(
        &self,
        bucket: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<String>, String> {
        let mut conn = self.db.reader().await.map_err(err)?;
        db::state::kv_keys(&mut conn, &self.tenant, bucket, offset as i64, limit as i64)
            .await
            .map_err(err)
    }
}

#[async_trait]
impl Notifier for Scope {
    async fn notify(
        &self,
        key: &str,
        notification: OutgoingNotification,
    ) -> Result<String, String> {
        let mut conn = self.db.writer().await.map_err(err)?;
        let row = db::state::NotificationRow {
            id: format!("ntf_{}", uuid::Uuid::now_v7().simple()),
            tenant_id: self.tenant.clone(),
            run_id: Some(self.run_id.clone()),
            step_id: Some(self.step_id.clone()),
            title: notification.title,
            body: notification.body,
            level: notification.level,
            audience: notification.audience,
            link: notification.link,
            created_at: db::now_ms(),
            read_at: None,
        };
        db::state::notification_put(&mut conn, key, &row)
            .await
            .map_err(err)
    }
}

#[async_trait]
impl Mailer for Scope {
    async fn send(&self, key: &str, mail: OutgoingMail) -> Result<String, String> {
        let mut conn = self.db.writer().await.map_err(err)?;
        let now = db::now_ms();
        let message = db::state::OutboxMessage {
            tenant_id: self.tenant.clone(),
            key: key.to_owned(),
            message_id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
            run_id: Some(self.run_id.clone()),
            step_id: Some(self.step_id.clone()),
            to: mail.to,
            cc: mail.cc,
            subject: mail.subject,
            body: mail.body,
            status: db::state::OutboxStatus::Queued,
            attempts: 0,
            last_error: None,
            created_at: now,
            sent_at: None,
            next_attempt_at: now,
        };
        db::state::outbox_put(&mut conn, &message)
            .await
            .map_err(err)
    }
}

#[async_trait]
impl Files for Scope {
    async fn read(&self, file_id: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
        let mut conn = self.db.reader().await.map_err(err)?;
        match db::state::file_content(&mut conn, &self.tenant, file_id, max_bytes as i64)
            .await
            .map_err(err)?
        {
            None => Err(format!("no file with id {file_id:?}")),
            Some((size, None)) => Err(format!(
                "file {file_id:?} is {size} bytes, over the {max_bytes}-byte limit"
            )),
            Some((_, Some(bytes))) => Ok(bytes),
        }
    }
}

#[async_trait]
impl Secrets for Scope {
    async fn get(&self, name: &str) -> Option<String> {
        let secrets = self.secrets.as_ref()?;
        let mut conn = self.db.reader().await.ok()?;
        let sealed = db::state::secret_get(&mut conn, &self.tenant, name)
            .await
            .ok()??;
        match secrets.open(&self.tenant, name, &sealed) {
            Ok(bytes) => String::from_utf8(bytes).ok(),
            Err(e) => {
                tracing::error!(error = %e, secret = name, "a stored secret could not be opened");
                None
            }
        }
    }
}

#[async_trait]
impl Progress for Scope {
    fn progress(&self, percent: u8, note: &str) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        {
            let mut last = self
                .last_progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) && percent < 100 {
                return;
            }
            *last = Some(Instant::now());
        }
        // Sent before the attempt's result: the recorder writes it first.
        let _ = recorder.send(ToRecord::Progress(db::runs::ProgressEvent {
            tenant: self.tenant.clone(),
            run_id: self.run_id.clone(),
            step_id: self.step_id.clone(),
            data: serde_json::json!({"percent": percent, "note": note}).to_string(),
            at: db::now_ms(),
        }));
    }
}
