//! Tenants and API keys.

use sqlx::{AssertSqlSafe, Row};

use super::{Conn, DbError};

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    /// The operator's key: may manage tenants.
    pub operator: bool,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

fn api_key(r: &sqlx::any::AnyRow) -> Result<ApiKey, DbError> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        scopes: serde_json::from_str(r.try_get::<&str, _>("scopes")?)?,
        operator: r.try_get::<i64, _>("operator")? != 0,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

pub async fn tenant_count(conn: &mut Conn) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tenants")
        .fetch_one(conn)
        .await?)
}

pub async fn tenant_by_name(conn: &mut Conn, name: &str) -> Result<Option<Tenant>, DbError> {
    tenant_where(conn, "name", name).await
}

pub async fn tenant_by_id(conn: &mut Conn, id: &str) -> Result<Option<Tenant>, DbError> {
    tenant_where(conn, "id", id).await
}

/// The tenant whose `column` (a fixed name, never user input) is `value`.
async fn tenant_where(
    conn: &mut Conn,
    column: &'static str,
    value: &str,
) -> Result<Option<Tenant>, DbError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, name, created_at FROM tenants WHERE {column} = $1"
    )))
    .bind(value)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok::<_, DbError>(Tenant {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

pub async fn insert_tenant(conn: &mut Conn, tenant: &Tenant) -> Result<(), DbError> {
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.created_at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_key(conn: &mut Conn, key: &ApiKey, key_hash: &str) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes, operator, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&key.id)
    .bind(&key.tenant_id)
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(key_hash)
    .bind(serde_json::to_string(&key.scopes)?)
    .bind(i64::from(key.operator))
    .bind(key.created_at)
    .bind(key.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The key with this hash, whatever its state (the caller checks expiry
/// and revocation so it can say which).
pub async fn key_by_hash(conn: &mut Conn, key_hash: &str) -> Result<Option<ApiKey>, DbError> {
    let row = sqlx::query(
        "SELECT id, tenant_id, name, prefix, scopes, operator, created_at, expires_at, revoked_at, last_used_at
         FROM api_keys WHERE key_hash = $1",
    )
    .bind(key_hash)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(api_key).transpose()
}

pub async fn touch_key(conn: &mut Conn, id: &str, at: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(at)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn operator_key_exists(conn: &mut Conn) -> Result<bool, DbError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_keys WHERE operator = 1 AND revoked_at IS NULL",
    )
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

pub async fn list_tenants(conn: &mut Conn) -> Result<Vec<Tenant>, DbError> {
    let rows = sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY created_at, id")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok::<_, DbError>(Tenant {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// A tenant's keys, newest first (revoked ones included, marked).
pub async fn list_keys(conn: &mut Conn, tenant: &str) -> Result<Vec<ApiKey>, DbError> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, name, prefix, scopes, operator, created_at, expires_at, revoked_at, last_used_at
         FROM api_keys WHERE tenant_id = $1 ORDER BY id DESC",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    rows.iter().map(api_key).collect()
}

/// What revoking a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    Revoked,
    /// The operator's key: replaced only by pinning another
    /// (`WEFT_ADMIN_KEY`), never revoked through the API.
    Operator,
    /// No such unrevoked key in the tenant.
    NotFound,
}

/// Revokes a key of `tenant`, unless it is the operator's.
pub async fn revoke_key(
    conn: &mut Conn,
    tenant: &str,
    id: &str,
    at: i64,
) -> Result<Revoke, DbError> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1
         WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL AND operator = 0",
    )
    .bind(at)
    .bind(tenant)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Revoke::Revoked);
    }
    let operator: Option<i64> = sqlx::query_scalar(
        "SELECT operator FROM api_keys WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(match operator {
        Some(1) => Revoke::Operator,
        _ => Revoke::NotFound,
    })
}

/// Makes the operator key with `key_hash` the only one: valid again if it
/// was revoked or expired, and every other operator key revoked at `at`.
/// False if no operator key has that hash.
pub async fn pin_operator_key(conn: &mut Conn, key_hash: &str, at: i64) -> Result<bool, DbError> {
    let restored = sqlx::query(
        "UPDATE api_keys SET revoked_at = NULL, expires_at = NULL WHERE key_hash = $1 AND operator = 1",
    )
    .bind(key_hash)
    .execute(&mut *conn)
    .await?;
    if restored.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE api_keys SET revoked_at = $1
         WHERE operator = 1 AND revoked_at IS NULL AND key_hash <> $2",
    )
    .bind(at)
    .bind(key_hash)
    .execute(conn)
    .await?;
    Ok(true)
}

pub async fn set_jwt_secret(conn: &mut Conn, tenant: &str, sealed: &[u8]) -> Result<(), DbError> {
    sqlx::query("UPDATE tenants SET jwt_secret = $1 WHERE id = $2")
        .bind(sealed)
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn jwt_secret(conn: &mut Conn, tenant: &str) -> Result<Option<Vec<u8>>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT jwt_secret FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(conn)
            .await?
            .flatten(),
    )
}
