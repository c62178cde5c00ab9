//! Hosts sharing a Postgres database under a tenant cap: each host claims
//! a tenant's steps within its own share of the cap (`db::slots`), set
//! under the tenant's lock once per poll interval, not at every claim.
//! This host's claims for a tenant pass the tenant's gate one at a time,
//! in memory, so each counts what the one before it claimed; hosts never
//! wait for each other to claim.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
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
    /// a share of, in one transaction.
    async fn set_shares(&self, due: &[String]) -> Result<(), EngineError> {
        let mut tenants: BTreeMap<String, bool> = lock(&self.shares)
            .of
            .keys()
            .map(|t| (t.clone(), false))
            .collect();
        tenants.extend(due.iter().map(|t| (t.clone(), true)));
        let tenants: Vec<(String, bool)> = tenants.into_iter().collect();
        // No claim of this host for these tenants is under way while their
        // shares are set: each share counts what this host has running,
        // and claims go by the share in memory, changed before the gates
        // open again.
        let mut gates = Vec::with_capacity(tenants.len());
        for (tenant, _) in &tenants {
            gates.push(self.gate(tenant).lock_owned().await);
        }
        let now = db::now_ms();
        let mut tx = self.db.begin().await?;
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
        let mut shares = lock(&self.shares);
        for (tenant, share) in set {
            if share > 0 || tenants.iter().any(|(t, due)| *due && *t == tenant) {
                shares.of.insert(tenant, share);
            } else {
                shares.of.remove(&tenant);
            }
        }
        shares.set_at = Some(Instant::now());
        drop(shares);
        drop(gates);
        Ok(())
    }

    /// What the scheduler's claim claims within: the tenants with a step
    /// due and this host's share of each (set first for a tenant it holds
    /// no share of yet, or when the shares are older than the poll
    /// interval), with their gates taken in tenant order.
    pub(super) async fn claim_shares(&self) -> Result<ClaimShares, EngineError> {
        let due = self.due_tenants().await?;
        let unknown = {
            let shares = lock(&self.shares);
            due.iter().any(|t| !shares.of.contains_key(t))
        };
        if unknown || self.shares_stale() {
            self.set_shares(&due).await?;
        }
        let mut within = serde_json::Map::new();
        let mut gates = Vec::new();
        // `due` is in tenant order: a claim waits for a gate only while
        // holding lower ones, and a recorder only while holding none.
        for tenant in due {
            let share = self.share_of(&tenant);
            if share > 0 {
                gates.push(self.gate(&tenant).lock_owned().await);
                within.insert(tenant, share.into());
            }
        }
        Ok(ClaimShares {
            json: serde_json::Value::Object(within).to_string(),
            _gates: gates,
        })
    }
}
