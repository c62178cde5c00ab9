//! `/v1/plugins`: the catalog, uploads, yanking, public listing and
//! capability grants; and `/v1/action-catalog`.

use axum::Json;
use axum::extract::{DefaultBodyLimit, FromRequest as _, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::{
    Catalog, CatalogEntry, GrantsDoc, GrantsOut, PluginFromOci, PluginList, PluginOciSource,
    PluginOut, PluginPatch, PluginUpload, ProblemDoc,
};
use super::{ApiError, AppState};
use crate::engine::marketplace::GrantView;
use crate::engine::plugins::{Entry, Visibility};
use crate::runtime::Grants;

pub fn router() -> OpenApiRouter<AppState> {
    // The upload enforces its own, larger limit (`--max-upload-bytes`)
    // while reading the component, instead of the JSON body limit.
    let (schemas, paths, upload_route) = routes!(list, upload);
    OpenApiRouter::new()
        .routes((
            schemas,
            paths,
            upload_route.layer(DefaultBodyLimit::disable()),
        ))
        .routes(routes!(versions))
        .routes(routes!(version, yank, patch))
        .routes(routes!(get_grants, put_grants))
        .routes(routes!(catalog))
}

fn out(e: &Entry) -> PluginOut {
    let p = &e.plugin;
    PluginOut {
        name: e.name.clone(),
        version: p.info.version.to_string(),
        description: p.info.description.clone(),
        builtin: e.builtin(),
        publisher: e.listing.as_ref().map(|l| l.publisher.clone()),
        visibility: e
            .listing
            .as_ref()
            .map_or(Visibility::Public, |l| l.visibility)
            .as_str()
            .to_owned(),
        yanked: e.yanked(),
        capabilities: p.info.capabilities.clone(),
        config_schema: p.info.config_schema.clone(),
        input_schema: p.info.input_schema.clone(),
        output_schema: p.info.output_schema.clone(),
        sha256: p.hash.clone(),
        size_bytes: p.size,
        oci: e
            .listing
            .as_ref()
            .and_then(|l| l.oci.as_ref())
            .map(|o| PluginOciSource {
                reference: o.reference.clone(),
                digest: o.digest.clone(),
            }),
    }
}

fn grants_out(view: GrantView) -> GrantsOut {
    let g = view.granted;
    GrantsOut {
        plugin: view.plugin,
        granted: GrantsDoc {
            allowed_hosts: g.allowed_hosts,
            secrets: g.secrets,
            mail: g.mail,
            kv: g.kv,
            files: g.files,
            notify: g.notify,
        },
        requested: view.requested,
        ungranted: view.ungranted,
    }
}

fn visibility(text: &str) -> Result<Visibility, ApiError> {
    Visibility::parse(text.trim()).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "visibility must be \"private\" or \"public\", got {text:?}"
        ))
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Matches name and description.
    q: Option<String>,
    /// Page size, 1–100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
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
    let limit = super::page_limit(query.limit)?;
    let q = query.q.map(|q| q.to_lowercase());
    let catalog = state.engine.plugins.catalog(&principal.tenant_id);
    let matching = catalog.iter().filter(|e| {
        q.as_ref().is_none_or(|q| {
            e.name.to_lowercase().contains(q)
                || e.plugin.info.description.to_lowercase().contains(q)
        })
    });
    // The cursor is `name@version` of the last entry sent; the catalog's
    // order is stable, so the page resumes right after it.
    let key = |e: &&Entry| format!("{}@{}", e.name, e.plugin.info.version);
    let rest: Vec<_> = match &query.cursor {
        None => matching.collect(),
        Some(after) => {
            let all: Vec<_> = matching.collect();
            let position = all.iter().position(|e| &key(e) == after).ok_or_else(|| {
                ApiError::BadRequest(format!("cursor {after:?} is not a plugin of this catalog"))
            })?;
            all.into_iter().skip(position + 1).collect()
        }
    };
    let (page, next_cursor) = super::paginate(rest, limit, key);
    Ok(Json(PluginList {
        items: page.into_iter().map(out).collect(),
        next_cursor,
    }))
}

/// Every version of one plugin (`name` or `publisher/name`), newest first.
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
        .versions(&principal.tenant_id, &name)
        .ok_or_else(|| ApiError::NotFound(format!("plugin {name:?}")))?
        .iter()
        .rev()
        .map(out)
        .collect();
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
        .exact_entry(&principal.tenant_id, &format!("{name}@{version}"))
        .map(|e| Json(out(&e)))
        .ok_or_else(|| ApiError::NotFound(format!("plugin {name}@{version}")))
}

/// Adds a plugin version: either uploads a component
/// (`multipart/form-data`: `component`, optional `visibility`), or pulls one
/// from an OCI registry the operator allows (`application/json`:
/// `{"oci": "host/ns/name:tag" | "host/ns/name@sha256:…", "visibility"?}`;
/// a tag is pinned to its manifest digest). Either way it is validated
/// against the `weft:plugin` world, compiled and described; name and
/// version come from its `describe()`.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins",
    request_body(content(
        (PluginUpload = "multipart/form-data"),
        (PluginFromOci = "application/json"),
    )),
    responses((status = 201, body = PluginOut), (status = 400, body = ProblemDoc),
        (status = 403, body = ProblemDoc, description = "the OCI registry is not in the server's `--oci-allow`"),
        (status = 409, body = ProblemDoc), (status = 413, body = ProblemDoc),
        (status = 415, body = ProblemDoc), (status = 422, body = ProblemDoc),
        (status = 502, body = ProblemDoc, description = "the OCI registry failed, or its content does not match its digest")))]
async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<(StatusCode, Json<PluginOut>), ApiError> {
    principal.require("plugins:publish")?;
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let entry = if is_json {
        from_oci(&state, &principal, request).await?
    } else {
        from_form(&state, &principal, request).await?
    };
    Ok((StatusCode::CREATED, Json(out(&entry))))
}

/// Largest JSON body of a pull request: a reference and a visibility.
const OCI_BODY_LIMIT: usize = 16 << 10;

async fn from_oci(
    state: &AppState,
    principal: &Principal,
    request: Request,
) -> Result<Entry, ApiError> {
    let bytes = axum::body::to_bytes(request.into_body(), OCI_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(OCI_BODY_LIMIT))?;
    let shape = "{\"oci\": \"host/namespace/name:tag\", \"visibility\"?: \"private\"|\"public\"}";
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the JSON body must be {shape}: {e}")))?;
    // JSON is only for pulling; a component itself is uploaded as a form.
    if value.get("oci").is_none() {
        return Err(ApiError::Unsupported(format!(
            "a JSON body pulls the plugin from an OCI registry and must be {shape}; upload a component as multipart/form-data with a `component` file field"
        )));
    }
    let body: PluginFromOci = serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("the JSON body must be {shape}: {e}")))?;
    let listed = match &body.visibility {
        Some(text) => visibility(text)?,
        None => Visibility::Private,
    };
    Ok(state
        .engine
        .plugin_from_oci(&principal.tenant_id, &body.oci, listed)
        .await?)
}

async fn from_form(
    state: &AppState,
    principal: &Principal,
    request: Request,
) -> Result<Entry, ApiError> {
    let limit = state.engine.config.max_upload_bytes;
    super::refuse_declared_over(request.headers(), limit)?;
    let mut form = Multipart::from_request(request, state).await.map_err(|_| {
        ApiError::Unsupported(
            "send the plugin as multipart/form-data with a `component` file field, or as application/json {\"oci\": \"host/namespace/name:tag\"} to pull it from an OCI registry".into(),
        )
    })?;
    let multipart_error = super::multipart_error(limit);
    let mut component: Option<Vec<u8>> = None;
    let mut listed = Visibility::Private;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "component" => {
                component = Some(super::read_field(&mut field, limit).await?);
            }
            "visibility" => listed = visibility(&field.text().await.map_err(multipart_error)?)?,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown form field {other:?}: send `component` and optionally `visibility`"
                )));
            }
        }
    }
    let component = component.ok_or_else(|| {
        ApiError::BadRequest("the form has no `component` field with the .wasm file".into())
    })?;
    Ok(state
        .engine
        .upload_plugin(&principal.tenant_id, &component, listed)
        .await?)
}

/// Yanks one of this tenant's versions: runs already pinned to it keep
/// working; new definitions cannot use it.
#[utoipa::path(delete, path = "/v1/plugins/{name}/{version}", tag = "plugins", params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = PluginOut), (status = 404, body = ProblemDoc)))]
async fn yank(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PluginOut>, ApiError> {
    principal.require("plugins:publish")?;
    let entry = state
        .engine
        .yank_plugin(&principal.tenant_id, &name, &version)
        .await?;
    Ok(Json(out(&entry)))
}

/// Lists one of this tenant's versions publicly (`public`) or stops
/// listing it (`private`).
#[utoipa::path(patch, path = "/v1/plugins/{name}/{version}", tag = "plugins", params(("name" = String, Path), ("version" = String, Path)),
    request_body = PluginPatch,
    responses((status = 200, body = PluginOut), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, version)): Path<(String, String)>,
    body: Result<Json<PluginPatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PluginOut>, ApiError> {
    principal.require("plugins:publish")?;
    let Json(body) = body?;
    let listed = visibility(&body.visibility)?;
    let entry = state
        .engine
        .set_plugin_visibility(&principal.tenant_id, &name, &version, listed)
        .await?;
    Ok(Json(out(&entry)))
}

/// What this tenant lets a plugin use, what it asks for, and the difference.
#[utoipa::path(get, path = "/v1/plugins/{name}/grants", tag = "plugins", params(("name" = String, Path)),
    responses((status = 200, body = GrantsOut), (status = 404, body = ProblemDoc)))]
async fn get_grants(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<GrantsOut>, ApiError> {
    principal.require("plugins:read")?;
    let view = state.engine.plugin_grants(&principal.tenant_id, &name)?;
    Ok(Json(grants_out(view)))
}

/// Replaces this tenant's grants for a plugin (`name` or `publisher/name`).
/// Nothing is granted to an uploaded plugin until this says so; for a
/// built-in these add to what it gets anyway.
#[utoipa::path(put, path = "/v1/plugins/{name}/grants", tag = "plugins", params(("name" = String, Path)),
    request_body = GrantsDoc,
    responses((status = 200, body = GrantsOut), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn put_grants(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: Result<Json<GrantsDoc>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<GrantsOut>, ApiError> {
    principal.require("plugins:publish")?;
    let Json(body) = body?;
    let grants = Grants {
        allowed_hosts: body.allowed_hosts,
        secrets: body.secrets,
        mail: body.mail,
        kv: body.kv,
        files: body.files,
        notify: body.notify,
    };
    let view = state
        .engine
        .put_plugin_grants(&principal.tenant_id, &name, grants)
        .await?;
    Ok(Json(grants_out(view)))
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
            output_schema: None,
            capabilities: Vec::new(),
            role: None,
            version: None,
        },
        CatalogEntry {
            uses: "collect_inputs".into(),
            kind: "builtin".into(),
            description: "Pauses the run until data meeting `schema` is sent with resume.".into(),
            config_schema: json!({"type": "object", "properties": {"schema": {"type": "object"}}}),
            output_schema: None,
            capabilities: Vec::new(),
            role: None,
            version: None,
        },
        CatalogEntry {
            uses: "request_user_action".into(),
            kind: "builtin".into(),
            description: "Pauses the run until one of `actions` is chosen; those in `decline` end it as declined.".into(),
            config_schema: json!({"type": "object", "required": ["actions"], "properties": {
                "actions": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "decline": {"type": "array", "items": {"type": "string"}}
            }}),
            output_schema: None,
            capabilities: Vec::new(),
            role: None,
            version: None,
        },
    ];
    let mut seen = std::collections::BTreeSet::new();
    for entry in state.engine.plugins.catalog(&principal.tenant_id) {
        if !entry.yanked() && seen.insert(entry.name.clone()) {
            let plugin = &entry.plugin;
            items.push(CatalogEntry {
                uses: format!("{}@{}", entry.name, plugin.info.version.major),
                kind: "plugin".into(),
                description: plugin.info.description.clone(),
                config_schema: plugin.info.config_schema.clone(),
                output_schema: Some(plugin.info.output_schema.clone()),
                capabilities: plugin.info.capabilities.clone(),
                role: plugin.info.output_schema[crate::engine::definition::ROLE_KEY]
                    .as_str()
                    .map(str::to_owned),
                version: Some(plugin.info.version.to_string()),
            });
        }
    }
    Ok(Json(Catalog { items }))
}
