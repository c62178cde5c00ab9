//! Plugins uploaded by tenants (component bytes stored once by content
//! hash), their yanking and visibility, and each tenant's capability grants.

use sqlx::Row;

use super::{Conn, DbError};

/// One uploaded plugin version.
#[derive(Debug, Clone)]
pub struct PluginRow {
    pub tenant_id: String,
    /// The tenant's name: how other tenants address a public plugin.
    pub publisher: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size: i64,
    /// `private` or `public`.
    pub visibility: String,
    /// What `describe()` returned at upload, as JSON.
    pub info: String,
    pub created_at: i64,
    pub yanked_at: Option<i64>,
    /// The OCI reference it was pulled from, as given; `None` if uploaded.
    pub oci_reference: Option<String>,
    /// The manifest digest that reference was pinned to.
    pub oci_digest: Option<String>,
}

/// A tenant's grants for one plugin, as stored.
#[derive(Debug, Clone)]
pub struct GrantRow {
    pub tenant_id: String,
    /// `name` or `publisher/name`.
    pub plugin: String,
    /// JSON: `{allowed_hosts, secrets, mail, kv, files}`.
    pub grants: String,
}

pub async fn tenant_name(conn: &mut Conn, tenant: &str) -> Result<Option<String>, DbError> {
    Ok(sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(conn)
        .await?)
}

/// Stores component bytes under their hash (a no-op if already there).
pub async fn put_blob(conn: &mut Conn, sha256: &str, bytes: &[u8]) -> Result<(), DbError> {
    sqlx::query("INSERT INTO plugin_blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(sha256)
        .bind(bytes)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn blob(conn: &mut Conn, sha256: &str) -> Result<Option<Vec<u8>>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT bytes FROM plugin_blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(conn)
            .await?,
    )
}

/// Inserts a plugin version; a duplicate (tenant, name, version) is a
/// unique violation.
pub async fn insert(conn: &mut Conn, p: &PluginRow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO plugins (tenant_id, name, version, sha256, size, visibility, info, created_at, yanked_at,
                              oci_reference, oci_digest)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&p.tenant_id)
    .bind(&p.name)
    .bind(&p.version)
    .bind(&p.sha256)
    .bind(p.size)
    .bind(&p.visibility)
    .bind(&p.info)
    .bind(p.created_at)
    .bind(p.yanked_at)
    .bind(&p.oci_reference)
    .bind(&p.oci_digest)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every uploaded plugin of every tenant, for loading at start.
pub async fn all(conn: &mut Conn) -> Result<Vec<PluginRow>, DbError> {
    let rows = sqlx::query(
        "SELECT p.tenant_id, t.name AS publisher, p.name, p.version, p.sha256, p.size,
                p.visibility, p.info, p.created_at, p.yanked_at, p.oci_reference, p.oci_digest
         FROM plugins p JOIN tenants t ON t.id = p.tenant_id
         ORDER BY p.created_at",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok::<_, DbError>(PluginRow {
                tenant_id: r.try_get("tenant_id")?,
                publisher: r.try_get("publisher")?,
                name: r.try_get("name")?,
                version: r.try_get("version")?,
                sha256: r.try_get("sha256")?,
                size: r.try_get("size")?,
                visibility: r.try_get("visibility")?,
                info: r.try_get("info")?,
                created_at: r.try_get("created_at")?,
                yanked_at: r.try_get("yanked_at")?,
                oci_reference: r.try_get("oci_reference")?,
                oci_digest: r.try_get("oci_digest")?,
            })
        })
        .collect()
}

/// Yanks a version of `tenant`'s plugin; false if there is no such version.
/// Yanking twice is not an error.
pub async fn yank(
    conn: &mut Conn,
    tenant: &str,
    name: &str,
    version: &str,
    at: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE plugins SET yanked_at = COALESCE(yanked_at, $1)
         WHERE tenant_id = $2 AND name = $3 AND version = $4",
    )
    .bind(at)
    .bind(tenant)
    .bind(name)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Lists a version of `tenant`'s plugin publicly or privately; false if
/// there is no such version.
pub async fn set_visibility(
    conn: &mut Conn,
    tenant: &str,
    name: &str,
    version: &str,
    visibility: &str,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE plugins SET visibility = $1 WHERE tenant_id = $2 AND name = $3 AND version = $4",
    )
    .bind(visibility)
    .bind(tenant)
    .bind(name)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn put_grants(
    conn: &mut Conn,
    tenant: &str,
    plugin: &str,
    grants: &str,
    at: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO plugin_grants (tenant_id, plugin, grants, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, plugin) DO UPDATE SET grants = excluded.grants, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(plugin)
    .bind(grants)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every tenant's grants, for the in-memory cache at start.
pub async fn all_grants(conn: &mut Conn) -> Result<Vec<GrantRow>, DbError> {
    let rows = sqlx::query("SELECT tenant_id, plugin, grants FROM plugin_grants")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok::<_, DbError>(GrantRow {
                tenant_id: r.try_get("tenant_id")?,
                plugin: r.try_get("plugin")?,
                grants: r.try_get("grants")?,
            })
        })
        .collect()
}

/// Bytes of plugin components a tenant has uploaded (yanked ones included).
pub async fn storage_used(conn: &mut Conn, tenant: &str) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM plugins WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?)
}
