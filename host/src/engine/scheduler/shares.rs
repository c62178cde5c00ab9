//! Hosts sharing a Postgres database under a tenant cap: each host claims
//! a tenant's steps within its own share of the cap (`db::slots`), set
//! under the tenant's lock once per poll interval, not at every claim.
//! This host's claims for a tenant pass the tenant's gate one at a time,
//! in memory, so each counts what the one before it claimed; hosts never
//! wait for each other to claim.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::OwnedMutexGuard;

use super::super::{Engine, EngineError, lock};
use crate::db;

/// This host's share of each tenant's cap, and when the shares were set.
#[derive(Default)]
pub(crate) struct Shares {
    of: HashMap<String, i64>,
    set_at: Option<Instant>,
}

/// What a claim of the scheduler claims within: each due tenant's share
/// (a JSON object for `db::runs::claim`), with the tenants' gates held.
pub(super) struct ClaimShares {
    pub(super) json: String,
    _gates: Vec<OwnedMutexGuard<()>>,
}

impl Engine {
    /// Whether this host claims within shares of the tenant cap: hosts may
    /// share the database and a cap is enforced.
    pub(super) fn shares_cap(&self) -> bool {
        !self.db.exclusive() && self.capped()
    }

    /// This host's share of `tenant`'s cap: 0 when it holds none, or when
    /// its shares were last set half a lease ago or more (they could not
    /// be renewed, and other hosts will take them once they expire).
    pub(super) fn share_of(&self, tenant: &str) -> i64 {
        let shares = lock(&self.shares);
        if shares
            .set_at
            .is_none_or(|at| at.elapsed() >= self.config.lease / 2)
        {
            return 0;
        }
        shares.of.get(tenant).copied().unwrap_or(0)
    }

    /// The gate of this host's claims for `tenant`.
    pub(super) fn gate(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.gates)
            .entry(tenant.to_owned())
            .or_default()
            .clone()
    }

    /// Whether the shares are older than the poll interval.
    fn shares_stale(&self) -> bool {
        lock(&self.shares)
            .set_at
            .is_none_or(|at| at.elapsed() >= self.config.poll)
    }

    /// How long until the shares this host holds are due for renewal, if
    /// it holds any: the scheduler waits no longer than that (and no less
    /// than a tenth of the poll interval, should renewing fail).
    pub(super) fn shares_renew_in(&self) -> Option<std::time::Duration> {
        if !self.shares_cap() {
            return None;
        }
        let shares = lock(&self.shares);
        if shares.of.is_empty() {
            return None;
        }
        let poll = self.config.poll;
        let due = shares.set_at.map_or(std::time::Duration::ZERO, |at| {
            poll.saturating_sub(at.elapsed())
        });
        Some(due.max(poll / 10))
    }

    /// Renews the shares this host holds once they are older than the poll
    /// interval: they expire unless renewed, and other hosts with work for
    /// a tenant are given their part as this host's shrinks.
    pub(super) async fn renew_shares(&self) {
        if !self.shares_cap() || lock(&self.shares).of.is_empty() || !self.shares_stale() {
            return;
        }
        let due = match self.due_tenants().await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read which tenants have steps due");
                return;
            }
        };
        if let Err(e) = self.set_shares(&due).await {
            tracing::warn!(error = %e, "could not renew this host's shares of the tenant cap");
        }
    }

    /// The tenants with a step due now.
    async fn due_tenants(&self) -> Result<Vec<String>, EngineError> {
        let mut conn = self.db.reader().await?;
        Ok(db::slots::due_tenants(&mut conn, db::now_ms()).await?)
    }

    /// Sets this host's share of each tenant of `due` and of those it holds
    /// a share of, in one transaction. A host without a free slot asks for
    /// no share of a tenant it runs nothing of: it could not use it.
    async fn set_shares(&self, due: &[String]) -> Result<(), EngineError> {
        let mut tenants: BTreeMap<String, bool> = lock(&self.shares)
            .of
            .keys()
            .map(|t| (t.clone(), false))
            .collect();
        if self.in_flight.load(Ordering::SeqCst) < self.config.max_parallel {
            tenants.extend(due.iter().map(|t| (t.clone(), true)));
        }
        if tenants.is_empty() {
            return Ok(());
        }
        let tenants: Vec<(String, bool)> = tenants.into_iter().collect();
        // The connection first, then the gates: nothing holds a gate while
        // it waits for a connection (a recorder holds one while it waits
        // for a gate). No claim of this host for these tenants is under
        // way while their shares are set: each share counts what this host
        // has running, and claims go by the share in memory, changed
        // before the gates open again.
        let mut tx = self.db.begin().await?;
        let mut gates = Vec::with_capacity(tenants.len());
        for (tenant, _) in &tenants {
            gates.push(self.gate(tenant).lock_owned().await);
        }
        // Taken before the rows' expiry is: the share in memory lapses
        // (half a lease from here) before the rows do.
        let started = Instant::now();
        let now = db::now_ms();
        let set = db::slots::share(
            &mut tx,
            &self.config.host_id,
            &tenants,
            i64::try_from(self.config.tenant_max_running).unwrap_or(i64::MAX),
            i64::try_from(self.config.max_parallel).unwrap_or(i64::MAX),
            now,
            now + self.config.lease.as_millis() as i64,
        )
        .await?;
        tx.commit().await.map_err(db::DbError::from)?;
        let mut gone = Vec::new();
        let mut shares = lock(&self.shares);
        for (tenant, share) in set {
            match share {
                Some(share) => {
                    shares.of.insert(tenant, share);
                }
                None => {
                    shares.of.remove(&tenant);
                    gone.push(tenant);
                }
            }
        }
        shares.set_at = Some(started);
        drop(shares);
        drop(gates);
        // Gates of tenants this host no longer claims for, unless in use.
        lock(&self.gates).retain(|t, g| !gone.contains(t) || Arc::strong_count(g) > 1);
        Ok(())
    }

    /// The tenants with a step due, for the scheduler's claim, with this
    /// host's share of each set first where it holds none yet, or when
    /// the shares are older than the poll interval.
    pub(super) async fn due_for_claim(&self) -> Result<Vec<String>, EngineError> {
        let due = self.due_tenants().await?;
        let unknown = {
            let shares = lock(&self.shares);
            due.iter().any(|t| !shares.of.contains_key(t))
        };
        if unknown || self.shares_stale() {
            self.set_shares(&due).await?;
        }
        Ok(due)
    }

    /// What the scheduler's claim claims within: the tenants of `due` this
    /// host holds a share of, with their gates taken in tenant order
    /// (`due` is sorted: a claim waits for a gate only while holding lower
    /// ones, and a recorder only while holding none). The caller holds
    /// its connection already.
    pub(super) async fn claim_gates(&self, due: Vec<String>) -> ClaimShares {
        let mut within = serde_json::Map::new();
        let mut gates = Vec::new();
        for tenant in due {
            let share = self.share_of(&tenant);
            if share > 0 {
                gates.push(self.gate(&tenant).lock_owned().await);
                within.insert(tenant, share.into());
            }
        }
        ClaimShares {
            json: serde_json::Value::Object(within).to_string(),
            _gates: gates,
        }
    }
}
