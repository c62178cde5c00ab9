//! Background work besides the scheduler: failing runs past their
//! `max_duration_ms`, and delivering the mail outbox over SMTP.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::db;

impl Engine {
    pub(crate) async fn watch_deadlines(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
            let overdue = match self.db.reader().await {
                Ok(mut conn) => db::runs::overdue_runs(&mut conn, db::now_ms())
                    .await
                    .unwrap_or_default(),
                Err(_) => continue,
            };
            for run_id in overdue {
                if let Err(e) = self
                    .stop_run(None, &run_id, super::runs::Stop::Deadline)
                    .await
                {
                    tracing::warn!(%run_id, error = %e, "could not fail an overdue run");
                }
            }
        }
    }

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
            // is never sent twice.
            let Ok(Some(solo)) = self.db.solo(db::MAIL_LOCK).await else {
                continue;
            };
            let queued = match self.db.reader().await {
                Ok(mut conn) => db::state::outbox_queued(&mut conn, 50)
                    .await
                    .unwrap_or_default(),
                Err(_) => continue,
            };
            for message in queued {
                let mail = crate::runtime::services::OutgoingMail {
                    to: message.to.clone(),
                    cc: message.cc.clone(),
                    subject: message.subject.clone(),
                    body: message.body.clone(),
                };
                let (status, error) = match relay.deliver(&message.message_id, &mail).await {
                    Ok(()) => ("sent", None),
                    Err(e) if e.is_transient() && message.attempts < 10 => {
                        ("queued", Some(e.to_string()))
                    }
                    Err(e) => ("failed", Some(e.to_string())),
                };
                if let Ok(mut conn) = self.db.writer().await {
                    let _ = db::state::outbox_mark(
                        &mut conn,
                        &message.message_id,
                        status,
                        error.as_deref(),
                        db::now_ms(),
                    )
                    .await;
                }
            }
            solo.release(db::MAIL_LOCK).await;
        }
    }
}
