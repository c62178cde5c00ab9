//! `/v1/plugins` (read side) and `/v1/action-catalog`.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::{Catalog, CatalogEntry, PluginList, PluginOut, ProblemDoc};
use super::{ApiError, AppState};
use crate::runtime::Plugin;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(versions))
        .routes(routes!(version))
        .routes(routes!(catalog))
}

fn out(p: &Plugin) -> PluginOut {
    PluginOut {
        name: p.info.name.clone(),
        version: p.info.version.to_string(),
        description: p.info.description.clone(),
        builtin: true,
        capabilities: p.info.capabilities.clone(),
        config_schema: p.info.config_schema.clone(),
        input_schema: p.info.input_schema.clone(),
        output_schema: p.info.output_schema.clone(),
        sha256: p.hash.clone(),
        size_bytes: p.size,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Matches name and description.
    q: Option<String>,
}

/// The catalog this tenant can use, newest version of each plugin first.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", params(ListQuery), responses((status = 200, body = PluginList)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PluginList>, ApiError> {
    principal.require("plugins:read")?;
    let Query(query) = query?;
    let q = query.q.map(|q| q.to_lowercase());
    let items = state
        .engine
        .plugins
        .catalog(&principal.tenant_id)
        .iter()
        .filter(|p| {
            q.as_ref().is_none_or(|q| {
                p.info.name.to_lowercase().contains(q)
                    || p.info.description.to_lowercase().contains(q)
            })
        })
        .map(|p| out(p))
        .collect();
    Ok(Json(PluginList {
        items,
        next_cursor: None,
    }))
}

/// Every version of one plugin.
#[utoipa::path(get, path = "/v1/plugins/{name}", tag = "plugins", params(("name" = String, Path)),
    responses((status = 200, body = PluginList), (status = 404, body = ProblemDoc)))]
async fn versions(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<PluginList>, ApiError> {
    principal.require("plugins:read")?;
    let items: Vec<PluginOut> = state
        .engine
        .plugins
        .catalog(&principal.tenant_id)
        .iter()
        .filter(|p| p.info.name == name)
        .map(|p| out(p))
        .collect();
    if items.is_empty() {
        return Err(ApiError::NotFound(format!("plugin {name:?}")));
    }
    Ok(Json(PluginList {
        items,
        next_cursor: None,
    }))
}

/// One version with its schemas and capabilities.
#[utoipa::path(get, path = "/v1/plugins/{name}/{version}", tag = "plugins", params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = PluginOut), (status = 404, body = ProblemDoc)))]
async fn version(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PluginOut>, ApiError> {
    principal.require("plugins:read")?;
    state
        .engine
        .plugins
        .exact(&principal.tenant_id, &format!("{name}@{version}"))
        .map(|p| Json(out(&p)))
        .ok_or_else(|| ApiError::NotFound(format!("plugin {name}@{version}")))
}

/// Every step kind and plugin, with its config schema.
#[utoipa::path(get, path = "/v1/action-catalog", tag = "plugins", responses((status = 200, body = Catalog)))]
async fn catalog(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Catalog>, ApiError> {
    principal.require("workflows:read")?;
    let mut items = vec![
        CatalogEntry {
            uses: "wait".into(),
            kind: "builtin".into(),
            description: "Waits for a duration or until a time.".into(),
            config_schema: json!({"oneOf": [
                {"type": "object", "required": ["duration_ms"], "properties": {"duration_ms": {"type": "integer", "minimum": 0}}},
                {"type": "object", "required": ["until"], "properties": {"until": {"type": "string", "format": "date-time"}}}
            ]}),
        },
        CatalogEntry {
            uses: "collect_inputs".into(),
            kind: "builtin".into(),
            description: "Pauses the run until data meeting `schema` is sent with resume.".into(),
            config_schema: json!({"type": "object", "properties": {"schema": {"type": "object"}}}),
        },
        CatalogEntry {
            uses: "request_user_action".into(),
            kind: "builtin".into(),
            description: "Pauses the run until one of `actions` is chosen; those in `decline` end it as declined.".into(),
            config_schema: json!({"type": "object", "required": ["actions"], "properties": {
                "actions": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "decline": {"type": "array", "items": {"type": "string"}}
            }}),
        },
    ];
    let mut seen = std::collections::BTreeSet::new();
    for plugin in state.engine.plugins.catalog(&principal.tenant_id) {
        if seen.insert(plugin.info.name.clone()) {
            items.push(CatalogEntry {
                uses: format!("{}@{}", plugin.info.name, plugin.info.version.major),
                kind: "plugin".into(),
                description: plugin.info.description.clone(),
                config_schema: plugin.info.config_schema.clone(),
            });
        }
    }
    Ok(Json(Catalog { items }))
}
