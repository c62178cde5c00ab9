//! Workflow definitions: one `workflows` row per key, one
//! `workflow_versions` row per semver version.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Conn, DbError};

#[derive(Debug, Clone)]
pub struct Workflow {
    pub tenant_id: String,
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    pub archived_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct Version {
    pub key: String,
    pub version: semver::Version,
    /// `draft` or `published`.
    pub status: String,
    /// The validated definition, as JSON text.
    pub definition: String,
    pub created_at: i64,
    pub published_at: Option<i64>,
}

fn workflow(r: &AnyRow) -> Result<Workflow, DbError> {
    Ok(Workflow {
        tenant_id: r.try_get("tenant_id")?,
        key: r.try_get("key")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        archived_at: r.try_get("archived_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn version(r: &AnyRow) -> Result<Version, DbError> {
    let text: String = r.try_get("version")?;
    Ok(Version {
        key: r.try_get("key")?,
        version: semver::Version::parse(&text).unwrap_or_else(|_| semver::Version::new(0, 0, 0)),
        status: r.try_get("status")?,
        definition: r.try_get("definition")?,
        created_at: r.try_get("created_at")?,
        published_at: r.try_get("published_at")?,
    })
}

pub async fn get(conn: &mut Conn, tenant: &str, key: &str) -> Result<Option<Workflow>, DbError> {
    let row = sqlx::query("SELECT * FROM workflows WHERE tenant_id = $1 AND key = $2")
        .bind(tenant)
        .bind(key)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(workflow).transpose()
}

pub async fn insert(conn: &mut Conn, w: &Workflow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO workflows (tenant_id, key, name, description, archived_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, NULL, $5, $6)",
    )
    .bind(&w.tenant_id)
    .bind(&w.key)
    .bind(&w.name)
    .bind(&w.description)
    .bind(w.created_at)
    .bind(w.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update_meta(
    conn: &mut Conn,
    tenant: &str,
    key: &str,
    name: &str,
    description: Option<&str>,
    at: i64,
) -> Result<(), DbError> {
    sqlx::query("UPDATE workflows SET name = $1, description = $2, updated_at = $3 WHERE tenant_id = $4 AND key = $5")
        .bind(name)
        .bind(description)
        .bind(at)
        .bind(tenant)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_archived(
    conn: &mut Conn,
    tenant: &str,
    key: &str,
    at: Option<i64>,
) -> Result<(), DbError> {
    sqlx::query("UPDATE workflows SET archived_at = $1, updated_at = COALESCE($2, updated_at) WHERE tenant_id = $3 AND key = $4")
        .bind(at)
        .bind(at)
        .bind(tenant)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_version(conn: &mut Conn, tenant: &str, v: &Version) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO workflow_versions (tenant_id, key, version, major, minor, patch, status, definition, created_at, published_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(tenant)
    .bind(&v.key)
    .bind(v.version.to_string())
    .bind(v.version.major as i64)
    .bind(v.version.minor as i64)
    .bind(v.version.patch as i64)
    .bind(&v.status)
    .bind(&v.definition)
    .bind(v.created_at)
    .bind(v.published_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every version of a workflow, newest first.
pub async fn versions(conn: &mut Conn, tenant: &str, key: &str) -> Result<Vec<Version>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM workflow_versions WHERE tenant_id = $1 AND key = $2
         ORDER BY major DESC, minor DESC, patch DESC",
    )
    .bind(tenant)
    .bind(key)
    .fetch_all(conn)
    .await?;
    rows.iter().map(version).collect()
}

pub async fn publish(
    conn: &mut Conn,
    tenant: &str,
    key: &str,
    version: &str,
    at: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE workflow_versions SET status = 'published', published_at = $1
         WHERE tenant_id = $2 AND key = $3 AND version = $4 AND status = 'draft'",
    )
    .bind(at)
    .bind(tenant)
    .bind(key)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Workflows of a tenant after `cursor` (a key), by key; `status` filters
/// on `archived` or on having a version in that status; `q` matches key,
/// name or description.
pub async fn list(
    conn: &mut Conn,
    tenant: &str,
    q: Option<&str>,
    status: Option<&str>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<Workflow>, DbError> {
    let pattern = q.map(|q| format!("%{}%", q.replace('%', "\\%").replace('_', "\\_")));
    let rows = sqlx::query(
        "SELECT w.* FROM workflows w
         WHERE w.tenant_id = $1
           AND ($2 IS NULL OR LOWER(w.key) LIKE LOWER($2) ESCAPE '\\' OR LOWER(w.name) LIKE LOWER($2) ESCAPE '\\' OR LOWER(COALESCE(w.description, '')) LIKE LOWER($2) ESCAPE '\\')
           AND ($3 IS NULL
                OR ($3 = 'archived' AND w.archived_at IS NOT NULL)
                OR ($3 <> 'archived' AND w.archived_at IS NULL AND EXISTS (
                      SELECT 1 FROM workflow_versions v WHERE v.tenant_id = w.tenant_id AND v.key = w.key AND v.status = $3)))
           AND ($4 IS NULL OR w.key > $4)
         ORDER BY w.key LIMIT $5 + 0",
    )
    .bind(tenant)
    .bind(pattern)
    .bind(status)
    .bind(cursor)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(workflow).collect()
}
