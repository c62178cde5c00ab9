//! Presets: a workflow's saved inputs.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Conn, DbError};

#[derive(Debug, Clone, PartialEq)]
pub struct PresetRow {
    pub tenant_id: String,
    pub workflow_key: String,
    pub name: String,
    pub description: Option<String>,
    /// JSON text.
    pub input: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn preset(r: &AnyRow) -> Result<PresetRow, DbError> {
    Ok(PresetRow {
        tenant_id: r.try_get("tenant_id")?,
        workflow_key: r.try_get("workflow_key")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        input: r.try_get("input")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub async fn get(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
    name: &str,
) -> Result<Option<PresetRow>, DbError> {
    let row = sqlx::query(
        "SELECT * FROM presets WHERE tenant_id = $1 AND workflow_key = $2 AND name = $3",
    )
    .bind(tenant)
    .bind(workflow)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(preset).transpose()
}

/// A workflow's presets by name.
pub async fn list(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
) -> Result<Vec<PresetRow>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM presets WHERE tenant_id = $1 AND workflow_key = $2 ORDER BY name",
    )
    .bind(tenant)
    .bind(workflow)
    .fetch_all(conn)
    .await?;
    rows.iter().map(preset).collect()
}

pub async fn count(conn: &mut Conn, tenant: &str, workflow: &str) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM presets WHERE tenant_id = $1 AND workflow_key = $2",
    )
    .bind(tenant)
    .bind(workflow)
    .fetch_one(conn)
    .await?)
}

/// Inserts the preset or replaces its description and input.
pub async fn upsert(conn: &mut Conn, p: &PresetRow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO presets (tenant_id, workflow_key, name, description, input, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, workflow_key, name)
         DO UPDATE SET description = excluded.description, input = excluded.input, updated_at = excluded.updated_at",
    )
    .bind(&p.tenant_id)
    .bind(&p.workflow_key)
    .bind(&p.name)
    .bind(&p.description)
    .bind(&p.input)
    .bind(p.created_at)
    .bind(p.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a preset; false if there was none.
pub async fn delete(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
    name: &str,
) -> Result<bool, DbError> {
    let done =
        sqlx::query("DELETE FROM presets WHERE tenant_id = $1 AND workflow_key = $2 AND name = $3")
            .bind(tenant)
            .bind(workflow)
            .bind(name)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() > 0)
}
