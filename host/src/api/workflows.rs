//! `/v1/workflows`: definitions and their versions.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::{
    CloneWorkflow, DefinitionDoc, IdempotencyKey, ProblemDoc, Publish, VersionList, VersionOut,
    WorkflowList, WorkflowOut,
};
use super::{ApiError, AppState, idempotent_create, page_limit, paginate};
use crate::engine::Definition;
use crate::engine::workflows::{Selector, WorkflowVersion};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, put, archive))
        .routes(routes!(versions))
        .routes(routes!(publish))
        .routes(routes!(unarchive))
        .routes(routes!(clone))
        .routes(routes!(input_schema))
}

fn out(found: &WorkflowVersion) -> WorkflowOut {
    WorkflowOut::new(&found.workflow, &found.version, &found.versions)
}

/// The integer fields of a definition (see [`super::dto::integral_floats`]).
const INTEGER_FIELDS: [&[&str]; 7] = [
    &["max_duration_ms"],
    &["min_interval_ms"],
    &["concurrency", "limit"],
    &["steps", "*", "timeout_ms"],
    &["steps", "*", "retry", "max_attempts"],
    &["steps", "*", "retry", "backoff", "initial_ms"],
    &["steps", "*", "retry", "backoff", "max_ms"],
];

/// Parses a definition body; `version` is taken out (only PUT uses it).
fn definition(mut body: Value) -> Result<(Definition, Option<semver::Version>), ApiError> {
    let version =
        match body.as_object_mut().and_then(|o| o.remove("version")) {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(semver::Version::parse(&v).map_err(|e| {
                ApiError::Unprocessable(format!("version {v:?} is not semver: {e}"))
            })?),
            Some(other) => {
                return Err(ApiError::Unprocessable(format!(
                    "version must be a string, found {other}"
                )));
            }
        };
    for path in INTEGER_FIELDS {
        super::dto::integral_floats(&mut body, path);
    }
    let definition = serde_json::from_value(body)
        .map_err(|e| ApiError::Unprocessable(format!("invalid definition: {e}")))?;
    Ok((definition, version))
}

/// Creates a workflow at version 0.1.0 (draft).
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", request_body = DefinitionDoc,
    params(IdempotencyKey),
    responses((status = 201, body = WorkflowOut), (status = 409, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require("workflows:write")?;
    let Json(body) = body?;
    let tenant = principal.tenant_id.clone();
    idempotent_create(
        &state,
        &tenant,
        &headers,
        "POST /v1/workflows",
        body,
        |body| async {
            let (definition, _) = definition(body)?;
            let created = state.engine.create_workflow(&tenant, definition).await?;
            serde_json::to_value(out(&created)).map_err(|e| ApiError::Internal(e.to_string()))
        },
    )
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Matches key, name and description.
    q: Option<String>,
    /// draft, published or archived.
    #[param(value_type = Option<WorkflowStatusDoc>, inline)]
    status: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<String>,
}

/// A workflow's status.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code, reason = "documents the allowed values")]
#[serde(rename_all = "lowercase")]
enum WorkflowStatusDoc {
    Draft,
    Published,
    Archived,
}

/// Lists workflows, by key.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(ListQuery),
    responses((status = 200, body = WorkflowList), (status = 422, body = ProblemDoc, description = "An unknown status")))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WorkflowList>, ApiError> {
    principal.require("workflows:read")?;
    let Query(query) = query?;
    let limit = page_limit(query.limit)?;
    let found = state
        .engine
        .list_workflows(
            &principal.tenant_id,
            query.q.as_deref(),
            query.status.as_deref(),
            query.cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let (found, next_cursor) = paginate(found, limit, |(w, _)| w.key.clone());
    let items = found
        .iter()
        .filter_map(|(w, versions)| versions.first().map(|v| WorkflowOut::new(w, v, versions)))
        .collect();
    Ok(Json(WorkflowList { items, next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    /// latest (default), published, or X.Y.Z.
    version: Option<String>,
}

/// One version of a workflow.
#[utoipa::path(get, path = "/v1/workflows/{key}", tag = "workflows", params(("key" = String, Path), GetQuery),
    responses((status = 200, body = WorkflowOut), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc, description = "A version that is not latest, published or semver")))]
async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
    query: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WorkflowOut>, ApiError> {
    principal.require("workflows:read")?;
    let Query(query) = query?;
    let selector = Selector::parse(query.version.as_deref())?;
    let found = state
        .engine
        .get_workflow(&principal.tenant_id, &key, &selector)
        .await?;
    Ok(Json(out(&found)))
}

/// Adds a draft version (published versions never change).
#[utoipa::path(put, path = "/v1/workflows/{key}", tag = "workflows", params(("key" = String, Path)), request_body = DefinitionDoc,
    responses((status = 200, body = WorkflowOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<WorkflowOut>, ApiError> {
    principal.require("workflows:write")?;
    // Another tenant's workflow is 404 whatever the body says.
    state
        .engine
        .workflow_versions(&principal.tenant_id, &key)
        .await?;
    let Json(body) = body?;
    let (definition, version) = definition(body)?;
    let created = state
        .engine
        .put_workflow(&principal.tenant_id, &key, definition, version)
        .await?;
    Ok(Json(out(&created)))
}

/// Archives a workflow: no new runs start; runs under way go on.
#[utoipa::path(delete, path = "/v1/workflows/{key}", tag = "workflows", params(("key" = String, Path)),
    responses((status = 200, body = WorkflowOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn archive(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
) -> Result<Json<WorkflowOut>, ApiError> {
    set_archived(state, principal, key, true).await
}

/// Brings an archived workflow back.
#[utoipa::path(post, path = "/v1/workflows/{key}/unarchive", tag = "workflows", params(("key" = String, Path)),
    responses((status = 200, body = WorkflowOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn unarchive(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
) -> Result<Json<WorkflowOut>, ApiError> {
    set_archived(state, principal, key, false).await
}

async fn set_archived(
    state: AppState,
    principal: Principal,
    key: String,
    archived: bool,
) -> Result<Json<WorkflowOut>, ApiError> {
    principal.require("workflows:write")?;
    state
        .engine
        .set_archived(&principal.tenant_id, &key, archived)
        .await?;
    let found = state
        .engine
        .get_workflow(&principal.tenant_id, &key, &Selector::Latest)
        .await?;
    Ok(Json(out(&found)))
}

/// Every version, newest first.
#[utoipa::path(get, path = "/v1/workflows/{key}/versions", tag = "workflows", params(("key" = String, Path)),
    responses((status = 200, body = VersionList), (status = 404, body = ProblemDoc)))]
async fn versions(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    principal.require("workflows:read")?;
    let (_, versions) = state
        .engine
        .workflow_versions(&principal.tenant_id, &key)
        .await?;
    Ok(Json(VersionList {
        key,
        items: versions.iter().map(VersionOut::from).collect(),
        next_cursor: None,
    }))
}

/// Publishes a draft version; it is immutable afterwards.
#[utoipa::path(post, path = "/v1/workflows/{key}/publish", tag = "workflows", params(("key" = String, Path)), request_body = Publish,
    responses((status = 200, body = WorkflowOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn publish(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
    body: Result<Json<Publish>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<WorkflowOut>, ApiError> {
    principal.require("workflows:write")?;
    let Json(body) = body?;
    let version = semver::Version::parse(&body.version).map_err(|e| {
        ApiError::Unprocessable(format!("version {:?} is not semver: {e}", body.version))
    })?;
    let published = state
        .engine
        .publish_workflow(&principal.tenant_id, &key, &version)
        .await?;
    Ok(Json(out(&published)))
}

/// Copies the newest version into a new workflow (version 0.1.0, draft).
#[utoipa::path(post, path = "/v1/workflows/{key}/clone", tag = "workflows", params(("key" = String, Path), IdempotencyKey), request_body = CloneWorkflow,
    responses((status = 201, body = WorkflowOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn clone(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require("workflows:write")?;
    let Json(body) = body?;
    let route = format!("POST /v1/workflows/{key}/clone");
    let tenant = principal.tenant_id.clone();
    idempotent_create(&state, &tenant, &headers, &route, body, |body| async {
        let request: CloneWorkflow =
            serde_json::from_value(body).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        let created = state
            .engine
            .clone_workflow(&tenant, &key, &request.new_key)
            .await?;
        serde_json::to_value(out(&created)).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
}

/// The JSON Schema a run's input must meet (`{}` if the workflow has none).
#[utoipa::path(get, path = "/v1/workflows/{key}/input-schema", tag = "workflows", params(("key" = String, Path), GetQuery),
    responses((status = 200, description = "A JSON Schema"), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc, description = "A version that is not latest, published or semver")))]
async fn input_schema(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
    query: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require("workflows:read")?;
    let Query(query) = query?;
    let selector = Selector::parse(query.version.as_deref())?;
    let found = state
        .engine
        .get_workflow(&principal.tenant_id, &key, &selector)
        .await?;
    Ok(Json(
        found
            .definition
            .input_schema
            .clone()
            .unwrap_or_else(|| serde_json::json!({})),
    ))
}
