//! Background work besides the scheduler: failing runs past their
//! `max_duration_ms`, and delivering the mail outbox over SMTP.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::db;
use crate::db::state::Delivery;
use crate::mail::SmtpRelay;

/// Runs deleted per retention transaction.
const RETENTION_BATCH: i64 = 500;

impl Engine {
    /// Fails runs past their `max_duration_ms` (every second) and sweeps
    /// rate-limit windows past use (every minute).
    pub(crate) async fn watch_deadlines(self: Arc<Self>, shutdown: CancellationToken) {
        for tick in 0u64.. {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
            if tick % 60 == 0 {
                let before = db::now_ms() - 2 * super::scheduler::RATE_WINDOW_MS;
                let swept = async {
                    let mut conn = self.db.writer().await?;
                    db::state::sweep_rate_windows(&mut conn, before).await
                };
                if let Err(e) = swept.await {
                    tracing::warn!(error = %e, "could not sweep rate-limit windows");
                }
            }
            let overdue = match self.db.reader().await {
                Ok(mut conn) => db::runs::overdue_runs(&mut conn, db::now_ms())
                    .await
                    .unwrap_or_default(),
                Err(_) => continue,
            };
            for run_id in overdue {
                if let Err(e) = self
                    .stop_run(None, &run_id, super::runs::Stop::Deadline, None)
                    .await
                {
                    tracing::warn!(%run_id, error = %e, "could not fail an overdue run");
                }
            }
        }
    }

    /// Deletes finished runs older than `--retention`, with their steps,
    /// attempts and events: every half the retention (between 1 s and a
    /// minute), in transactions of [`RETENTION_BATCH`] runs with a pause
    /// between them, so the engine's own writes go on meanwhile.
    pub(crate) async fn expire_runs(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(retention) = self.config.retention else {
            return;
        };
        let every = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let age = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
            let mut deleted = 0;
            loop {
                let before = db::now_ms().saturating_sub(age);
                let batch = async {
                    let mut tx = self.db.begin().await?;
                    let n =
                        db::runs::delete_finished_runs(&mut tx, before, RETENTION_BATCH).await?;
                    tx.commit().await.map_err(db::DbError::from)?;
                    Ok::<usize, db::DbError>(n)
                }
                .await;
                let n = match batch {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not delete expired runs; trying again later");
                        break;
                    }
                };
                deleted += n;
                if i64::try_from(n).unwrap_or(i64::MAX) < RETENTION_BATCH {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
            if deleted > 0 {
                self.metrics
                    .runs_deleted
                    .fetch_add(deleted as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(deleted, "deleted runs past the retention");
            }
        }
    }

    /// Sends due outbox messages over SMTP, once a second. A transient
    /// failure puts the message back with backoff ([`crate::mail::MailRetry`]); a
    /// permanent one, or the last allowed attempt, fails it with the
    /// reason.
    pub(crate) async fn send_mail(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(relay) = self.config.smtp.clone() else {
            return;
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
            // Several hosts on Postgres: one sends at a time, so a message
            // is not sent by two hosts at once.
            let Ok(Some(solo)) = self.db.solo(db::MAIL_LOCK).await else {
                continue;
            };
            let due = match self.db.reader().await {
                Ok(mut conn) => db::state::outbox_due(&mut conn, db::now_ms(), 50)
                    .await
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            for message in due {
                self.deliver_one(&relay, &message).await;
            }
            solo.release(db::MAIL_LOCK).await;
        }
    }

    async fn deliver_one(&self, relay: &SmtpRelay, message: &db::state::OutboxMessage) {
        let mail = crate::runtime::services::OutgoingMail {
            to: message.to.clone(),
            cc: message.cc.clone(),
            subject: message.subject.clone(),
            body: message.body.clone(),
        };
        let result = relay.deliver(&message.message_id, &mail).await;
        let error = result.as_ref().err().map(ToString::to_string);
        let attempt = u32::try_from(message.attempts + 1).unwrap_or(u32::MAX);
        let now = db::now_ms();
        let delivery = match (&result, &error) {
            (Ok(()), _) => Delivery::Sent,
            (Err(e), Some(error)) if e.is_transient() => {
                let jitter = rand::rng().random_range(0.8..1.2);
                match self.config.mail_retry.jittered(attempt, jitter) {
                    Some(wait) => Delivery::Retry {
                        error,
                        next_attempt_at: now + wait,
                    },
                    None => Delivery::Failed { error },
                }
            }
            (Err(_), error) => Delivery::Failed {
                error: error.as_deref().unwrap_or_default(),
            },
        };
        match &delivery {
            Delivery::Sent => {}
            Delivery::Retry { error, .. } => {
                tracing::info!(message_id = %message.message_id, attempt, error, "mail not delivered; will retry");
            }
            Delivery::Failed { error } => {
                tracing::warn!(message_id = %message.message_id, attempt, error, "mail failed");
            }
        }
        match self.db.writer().await {
            Ok(mut conn) => {
                if let Err(e) =
                    db::state::outbox_record(&mut conn, &message.message_id, &delivery, now).await
                {
                    tracing::warn!(message_id = %message.message_id, error = %e, "could not record a mail delivery");
                }
            }
            Err(e) => {
                tracing::warn!(message_id = %message.message_id, error = %e, "could not record a mail delivery");
            }
        }
    }
}
