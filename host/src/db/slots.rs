//! Postgres: each host's share of a tenant's cap on running steps
//! (`--tenant-max-running`), so that hosts sharing a database keep the cap
//! without counting a tenant's running steps under one lock.
//!
//! A host claims steps of a tenant only while its own running steps of
//! that tenant (`lease_owner`, counted by [`running_here`] or inside the
//! claim) are fewer than its share. Shares are set by [`share`], under the
//! tenant's advisory lock, so that the live rows of `tenant_slots` never
//! add up to more than the cap: a host's row holds the larger of its share
//! and what it has running (a host whose share shrank still counts for the
//! steps it runs until they end), and a row past its expiry (a host that
//! died) counts for nothing.

use serde_json::json;
use sqlx::Row;

use super::{Conn, DbError};

/// A tenant as one host sees it when its share is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub tenant: String,
    /// Steps of the tenant this host has running.
    pub running: i64,
    /// What the other hosts hold, added up: each one's live share or the
    /// steps of the tenant it has running, whichever is larger (a dead
    /// host's steps count until another host takes them over).
    pub others: i64,
    /// Other live hosts holding a row: hosts with work for the tenant.
    pub contenders: i64,
}

/// The share a host takes of a tenant's `cap`: an equal part among the
/// hosts with work for the tenant (rounded up), within what the others
/// leave and at most `max_parallel`; none when it has no work for it
/// (nothing due, nothing running). The row it writes is the larger of
/// that and what it has running.
pub fn share_of(seen: &Seen, due: bool, cap: i64, max_parallel: i64) -> Option<(i64, i64)> {
    if !due && seen.running == 0 {
        return None;
    }
    let hosts = seen.contenders + 1;
    let equal = cap / hosts + i64::from(cap % hosts != 0);
    let share = equal
        .min(cap.saturating_sub(seen.others))
        .min(max_parallel)
        .max(0);
    Some((share, share.max(seen.running)))
}

/// Sets this host's share of each tenant of `tenants` (with whether it has
/// a step of the tenant due), in the caller's transaction: takes the
/// tenants' locks in tenant order, reads what this host runs and what the
/// others hold, and writes this host's rows (`None` from [`share_of`]
/// deletes the row). Expired rows of these tenants are removed. Returns
/// each tenant's share, `None` for those whose row it deleted.
pub async fn share(
    tx: &mut Conn,
    host: &str,
    tenants: &[(String, bool)],
    cap: i64,
    max_parallel: i64,
    now: i64,
    expires_at: i64,
) -> Result<Vec<(String, Option<i64>)>, DbError> {
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    let names = json!(tenants.iter().map(|(t, _)| t).collect::<Vec<_>>()).to_string();
    // The lock is taken above the sorted DISTINCT: a volatile condition is
    // never pushed into such a subquery, so it runs in tenant order.
    sqlx::query(
        "SELECT s.t FROM (
             SELECT DISTINCT t COLLATE \"C\" AS t FROM json_array_elements_text($1::json) AS u(t)
             ORDER BY 1) s
         WHERE pg_advisory_xact_lock(hashtextextended('tenant:' || s.t, 0)) IS NOT NULL",
    )
    .bind(names.as_str())
    .fetch_all(&mut *tx)
    .await?;
    let rows = sqlx::query(
        "SELECT u.t,
                (SELECT COUNT(*) FROM steps s
                 WHERE s.status = 'running' AND s.tenant_id = u.t AND s.lease_owner = $2)::int8,
                (SELECT COALESCE(SUM(GREATEST(COALESCE(o.slots, 0), COALESCE(r.n, 0))), 0)
                 FROM (SELECT host_id AS h, slots FROM tenant_slots
                       WHERE tenant_id = u.t AND host_id <> $2 AND expires_at > $3) o
                 FULL JOIN (SELECT lease_owner AS h, COUNT(*) AS n FROM steps
                            WHERE status = 'running' AND tenant_id = u.t AND lease_owner <> $2
                            GROUP BY lease_owner) r USING (h))::int8,
                (SELECT COUNT(*) FROM tenant_slots o
                 WHERE o.tenant_id = u.t AND o.host_id <> $2 AND o.expires_at > $3)::int8
         FROM (SELECT DISTINCT t COLLATE \"C\" AS t FROM json_array_elements_text($1::json) AS u(t)) u",
    )
    .bind(names.as_str())
    .bind(host)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let mut shares = Vec::with_capacity(rows.len());
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for row in &rows {
        let seen = Seen {
            tenant: row.try_get(0)?,
            running: row.try_get(1)?,
            others: row.try_get(2)?,
            contenders: row.try_get(3)?,
        };
        let due = tenants.iter().any(|(t, due)| *due && *t == seen.tenant);
        match share_of(&seen, due, cap, max_parallel) {
            Some((share, slots)) => {
                kept.push(json!([seen.tenant, slots]));
                shares.push((seen.tenant, Some(share)));
            }
            None => {
                dropped.push(json!(seen.tenant));
                shares.push((seen.tenant, None));
            }
        }
    }
    sqlx::query(
        "WITH gone AS (
             DELETE FROM tenant_slots
             WHERE tenant_id IN (SELECT t COLLATE \"C\" FROM json_array_elements_text($1::json) AS u(t))
               AND ((expires_at <= $4 AND host_id <> $3)
                    OR (host_id = $3 AND tenant_id IN (
                        SELECT t COLLATE \"C\" FROM json_array_elements_text($2::json) AS d(t))))
             RETURNING 1)
         INSERT INTO tenant_slots (tenant_id, host_id, slots, expires_at)
         SELECT k.v->>0, $3, (k.v->>1)::int8, $5 FROM json_array_elements($6::json) AS k(v)
         ON CONFLICT (tenant_id, host_id)
         DO UPDATE SET slots = EXCLUDED.slots, expires_at = EXCLUDED.expires_at",
    )
    .bind(names.as_str())
    .bind(json!(dropped).to_string())
    .bind(host)
    .bind(now)
    .bind(expires_at)
    .bind(json!(kept).to_string())
    .execute(&mut *tx)
    .await?;
    Ok(shares)
}

/// The steps of `tenant` this host has running.
pub async fn running_here(conn: &mut Conn, tenant: &str, host: &str) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM steps WHERE status = 'running' AND tenant_id = $1 AND lease_owner = $2",
    )
    .bind(tenant)
    .bind(host)
    .fetch_one(conn)
    .await?)
}

/// The tenants with a step due by `now`, in tenant order (one probe per
/// tenant and priority, as in the claim).
pub async fn due_tenants(conn: &mut Conn, now: i64) -> Result<Vec<String>, DbError> {
    Ok(
        sqlx::query_scalar(super::runs::DUE_TENANTS_POSTGRES.as_str())
            .bind(now)
            .fetch_all(conn)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(running: i64, others: i64, contenders: i64) -> Seen {
        Seen {
            tenant: "t".into(),
            running,
            others,
            contenders,
        }
    }

    #[test]
    fn a_host_alone_takes_the_whole_cap_within_its_slots() {
        assert_eq!(share_of(&seen(0, 0, 0), true, 16, 32), Some((16, 16)));
        assert_eq!(share_of(&seen(0, 0, 0), true, 16, 8), Some((8, 8)));
    }

    #[test]
    fn hosts_with_work_split_the_cap_and_never_pass_it() {
        // Three hosts arriving one after the other, each seeing the rows
        // the earlier ones wrote.
        let (a, a_row) = share_of(&seen(0, 0, 0), true, 16, 32).unwrap();
        assert_eq!((a, a_row), (16, 16));
        // The second finds nothing left until the first shrinks.
        assert_eq!(share_of(&seen(0, 16, 1), true, 16, 32), Some((0, 0)));
        // The first, seeing a contender, shrinks to half but still counts
        // the 16 it runs.
        assert_eq!(share_of(&seen(16, 0, 1), true, 16, 32), Some((8, 16)));
        // Once its steps drained to 8, the second takes the rest.
        assert_eq!(share_of(&seen(8, 0, 1), true, 16, 32), Some((8, 8)));
        assert_eq!(share_of(&seen(0, 8, 1), true, 16, 32), Some((8, 8)));
        // A third: an equal part rounded up, within what is left.
        assert_eq!(share_of(&seen(0, 16, 2), true, 16, 32), Some((0, 0)));
        assert_eq!(share_of(&seen(8, 8, 2), true, 16, 32), Some((6, 8)));
        assert_eq!(share_of(&seen(0, 14, 2), true, 16, 32), Some((2, 2)));
    }

    #[test]
    fn a_host_without_work_gives_its_share_back() {
        assert_eq!(share_of(&seen(0, 4, 1), false, 16, 32), None);
        // Still running some: kept for them, and as a contender.
        assert_eq!(share_of(&seen(3, 0, 0), false, 16, 32), Some((16, 16)));
    }
}
