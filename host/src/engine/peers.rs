//! Hosts sharing a Postgres database tell each other what changed.
//!
//! Each committed change to a run is published with `NOTIFY` (batched: the
//! ids gathered while the previous notification was sent go out together);
//! every host `LISTEN`s, and on a notification from another host wakes its
//! scheduler and webhook loop and tells local listeners (event streams,
//! `wait_ms` starts) which runs changed. Nothing depends on a notification
//! arriving: the scheduler polls every `poll` interval, event streams every
//! second, so a notification lost (a dropped connection) only costs time.
//!
//! Uploaded plugins and grants live in each host's memory too: a change on
//! one host is published as [`PLUGINS`], and the others reload the catalog
//! from the database (only what changed is read; every minute anyway, in
//! case a notification was lost).
//!
//! SQLite has one host, so there is nothing to tell.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::{Engine, lock};

/// The notification channel.
const CHANNEL: &str = "weft_changes";

/// Published in place of a run id: uploaded plugins or grants changed.
const PLUGINS: &str = "#plugins";

/// How often a host reloads the plugin catalog without being told.
const CATALOG_EVERY: Duration = Duration::from_secs(60);

/// Longest payload sent: Postgres allows just under 8000 bytes.
const MAX_PAYLOAD: usize = 7_000;

impl Engine {
    /// Tells other hosts that uploaded plugins or grants changed.
    pub(crate) fn plugins_changed(&self) {
        if let Some(peers) = &self.peers {
            let _ = peers.send(PLUGINS.to_owned());
        }
    }

    /// Reloads uploaded plugins and grants from the database.
    async fn reload_catalog(&self) {
        match super::marketplace::load_stored(&self.db, &self.runtime, &self.plugins).await {
            Ok(n) => tracing::debug!(plugins = n, "plugin catalog reloaded"),
            Err(e) => tracing::warn!(error = %e, "could not reload the plugin catalog"),
        }
    }

    /// Starts publishing this host's changes and listening for the others'
    /// (Postgres only).
    pub(crate) fn start_peers(self: &Arc<Self>, shutdown: &CancellationToken) {
        let Some(published) = lock(&self.peers_rx).take() else {
            return;
        };
        let engine = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { engine.publish(published, stop).await });
        let engine = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { engine.listen(stop).await });
    }

    async fn publish(self: Arc<Self>, mut rx: UnboundedReceiver<String>, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                id = rx.recv() => match id {
                    Some(id) => id,
                    None => return,
                },
                () = stop.cancelled() => return,
            };
            let mut ids = BTreeSet::from([first]);
            while let Ok(id) = rx.try_recv() {
                ids.insert(id);
            }
            for payload in payloads(&self.config.host_id, &ids) {
                if let Err(e) = self.notify(&payload).await {
                    tracing::warn!(error = %e, "could not notify other hosts; they will see the change when they poll");
                }
            }
        }
    }

    async fn notify(&self, payload: &str) -> Result<(), crate::db::DbError> {
        let mut conn = self.db.writer().await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn listen(self: Arc<Self>, stop: CancellationToken) {
        let mut reconnecting = false;
        loop {
            if reconnecting {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return,
                }
            }
            reconnecting = true;
            let mut listener = match PgListener::connect(self.db.url()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for other hosts' changes; polling");
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "cannot listen for other hosts' changes; polling");
                continue;
            }
            // Whatever happened while not listening: look again now.
            self.wake.notify_one();
            self.webhook_wake.notify_one();
            self.reload_catalog().await;
            let mut catalog = tokio::time::interval(CATALOG_EVERY);
            catalog.tick().await;
            loop {
                let notification = tokio::select! {
                    n = listener.recv() => n,
                    _ = catalog.tick() => {
                        self.reload_catalog().await;
                        continue;
                    }
                    () = stop.cancelled() => return,
                };
                match notification {
                    Ok(n) => {
                        if self.heard(n.payload()) {
                            self.reload_catalog().await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the notification connection; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    /// A notification: `<host id> <run id>,<run id>,…`. Returns whether
    /// it says the plugin catalog changed.
    fn heard(&self, payload: &str) -> bool {
        let (host, ids) = payload.split_once(' ').unwrap_or((payload, ""));
        if host == self.config.host_id {
            return false;
        }
        let mut catalog = false;
        for id in ids.split(',').filter(|id| !id.is_empty()) {
            if id == PLUGINS {
                catalog = true;
            } else {
                let _ = self.changes.send(super::RunChanged {
                    id: id.to_owned(),
                    status: None,
                });
            }
        }
        self.wake.notify_one();
        self.webhook_wake.notify_one();
        catalog
    }
}

/// Notification payloads for `ids`, each under [`MAX_PAYLOAD`] bytes.
fn payloads(host: &str, ids: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = format!("{host} ");
    for id in ids {
        if current.len() + id.len() + 1 > MAX_PAYLOAD && current.len() > host.len() + 1 {
            out.push(std::mem::replace(&mut current, format!("{host} ")));
        }
        if !current.ends_with(' ') {
            current.push(',');
        }
        current.push_str(id);
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_carry_every_id() {
        let ids: BTreeSet<String> = (0..1000)
            .map(|i| format!("run-{i:04}-{}", "x".repeat(20)))
            .collect();
        let sent = payloads("host-a", &ids);
        assert!(sent.len() > 1, "split: {}", sent.len());
        let mut back = BTreeSet::new();
        for p in &sent {
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            let (host, list) = p.split_once(' ').expect("host");
            assert_eq!(host, "host-a");
            back.extend(list.split(',').map(str::to_owned));
        }
        assert_eq!(back, ids);
    }
}
