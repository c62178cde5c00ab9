//! API keys: `Authorization: Bearer <key>` or `x-api-key: <key>`. Keys are
//! stored only as a sha256 hash; every key belongs to one tenant and carries
//! scopes (`admin` implies all of them).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::db;

/// Every scope a key can hold.
pub const SCOPES: [&str; 12] = [
    "workflows:read",
    "workflows:write",
    "runs:start",
    "runs:read",
    "runs:control",
    "plugins:read",
    "plugins:publish",
    "webhooks:manage",
    "schedules:manage",
    "files:write",
    "secrets:manage",
    "admin",
];

/// Who is calling: resolved from the key on every request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: String,
    pub key_id: String,
    pub scopes: Vec<String>,
    pub operator: bool,
}

impl Principal {
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope || s == "admin") {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope.to_owned()))
        }
    }

    /// Passes with any one of `scopes` (reads allowed to several roles).
    pub fn require_any(&self, scopes: &[&str]) -> Result<(), ApiError> {
        if scopes.iter().any(|scope| self.require(scope).is_ok()) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scopes.join(" or ")))
        }
    }
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key: `wft_<mode>_` and 40 characters of [0-9a-zA-Z].
pub fn new_key(mode: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    let secret: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("wft_{mode}_{secret}")
}

fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        return value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim);
    }
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(parts).ok_or_else(|| {
            ApiError::Unauthorized("send `Authorization: Bearer <key>` or `x-api-key`".into())
        })?;
        if super::jwt::looks_like_jwt(key) {
            return super::jwt::verify(state, key).await;
        }
        let mut conn = state.engine.db.reader().await?;
        let found = db::auth::key_by_hash(&mut conn, &hash_key(key))
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown key".into()))?;
        drop(conn);
        let now = db::now_ms();
        if found.revoked_at.is_some() {
            return Err(ApiError::Unauthorized("the key was revoked".into()));
        }
        if found.expires_at.is_some_and(|at| at <= now) {
            return Err(ApiError::Unauthorized("the key has expired".into()));
        }
        state.limiter.request(&found.id)?;
        if found.last_used_at.is_none_or(|at| now - at > 60_000)
            && let Ok(mut conn) = state.engine.db.writer().await
        {
            let _ = db::auth::touch_key(&mut conn, &found.id, now).await;
        }
        Ok(Principal {
            tenant_id: found.tenant_id,
            key_id: found.id,
            scopes: found.scopes,
            operator: found.operator,
        })
    }
}

/// On an empty database: creates tenant `default` and an operator key
/// (`pinned`, or a new one). With a pinned key, that key is the operator's
/// and the only one: created if new, made valid again if it had been
/// revoked, and every other operator key (an earlier pinned one, the
/// generated one) revoked. Returns the key if it was newly created.
pub async fn bootstrap(db: &db::Db, pinned: Option<&str>) -> Result<Option<String>, db::DbError> {
    let mut tx = db.begin().await?;
    // Hosts starting at once on one empty database: one bootstraps.
    db::lock(&mut tx, "bootstrap").await?;
    let tenant = match db::auth::tenant_by_name(&mut tx, "default").await? {
        Some(t) => t,
        None => {
            let t = db::auth::Tenant {
                id: uuid::Uuid::now_v7().to_string(),
                name: "default".into(),
                created_at: db::now_ms(),
            };
            db::auth::insert_tenant(&mut tx, &t).await?;
            t
        }
    };
    let now = db::now_ms();
    let key = match pinned {
        Some(k) if db::auth::pin_operator_key(&mut tx, &hash_key(k), now).await? => None,
        Some(k) => Some(k.to_owned()),
        None if db::auth::tenant_count(&mut tx).await? > 0 && has_operator_key(&mut tx).await? => {
            None
        }
        None => Some(new_key("live")),
    };
    if let Some(k) = &key {
        let record = db::auth::ApiKey {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant.id.clone(),
            name: "operator".into(),
            prefix: k.chars().take(13).collect(),
            scopes: vec!["admin".into()],
            operator: true,
            created_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        db::auth::insert_key(&mut tx, &record, &hash_key(k)).await?;
        if pinned.is_some() {
            db::auth::pin_operator_key(&mut tx, &hash_key(k), now).await?;
        }
    }
    tx.commit().await?;
    Ok(key)
}

async fn has_operator_key(conn: &mut db::Conn) -> Result<bool, db::DbError> {
    db::auth::operator_key_exists(conn).await
}
