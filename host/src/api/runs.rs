//! `/v1/runs`: start, read, watch and control runs.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest as _, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::{
    EventList, EventOut, IdempotencyKey, ItemList, ItemOut, NotRetried, ProblemDoc, RerunRun,
    ResumeRun, RetryFailed, RetryFailedOut, RunList, RunOut, RunStatus, StartRun, StartRunForm,
    TenantEventList, TenantEventOut, Terminate, TraceParent,
};
use super::{
    ApiError, AppState, body_hash, idempotency_key, page_limit, paginate, replay, reused_key,
};
use crate::db;
use crate::db::runs::{RunStatus as Status, StepStatus};
use crate::engine::labels;
use crate::engine::runs::{Detail, Resume, StartKey, StartSpec, Started, Stop};

/// What `Idempotency-Key`s of run starts are scoped to.
const START_ROUTE: &str = "POST /v1/runs";

/// Longest `wait_ms` honoured.
const MAX_WAIT_MS: u64 = 60_000;

pub fn router() -> OpenApiRouter<AppState> {
    // Multipart starts carry attachments up to the file limit, enforced while
    // reading; JSON bodies are capped at MAX_BODY_BYTES by the handler.
    let (schemas, paths, start_route) = routes!(start, list);
    OpenApiRouter::new()
        .routes((
            schemas,
            paths,
            start_route.layer(axum::extract::DefaultBodyLimit::disable()),
        ))
        .routes(routes!(get))
        .routes(routes!(status))
        .routes(routes!(events))
        .routes(routes!(items))
        .routes(routes!(tenant_events))
        .routes(routes!(cancel))
        .routes(routes!(terminate))
        .routes(routes!(resume))
        .routes(routes!(rerun))
        .routes(routes!(pause))
        .routes(routes!(unpause))
        .routes(routes!(retry_failed))
}

fn json(value: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.to_string()))
}

/// How much of each attempt a run's body carries.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ViewQuery {
    /// `compact` (the default): each attempt's status, host, times and
    /// error. `full`: also its logs and rendered input.
    #[param(value_type = Option<ViewDoc>, inline)]
    view: Option<ViewDoc>,
}

/// A run body's detail.
#[derive(Deserialize, utoipa::ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ViewDoc {
    Compact,
    Full,
}

impl ViewQuery {
    fn detail(&self) -> Detail {
        match self.view {
            Some(ViewDoc::Full) => Detail::Full,
            Some(ViewDoc::Compact) | None => Detail::Compact,
        }
    }
}

/// Starts a run. Without `wait_ms`: 202 at once. With it: 200 with the
/// finished run if it ends (or pauses) in time, else 202. Also accepts
/// `multipart/form-data`: fields `workflow`, `version`, `wait_ms`, `input`
/// (JSON text; other text fields become input fields) and an `attachment`
/// file, stored like `POST /v1/files`; the input then carries
/// `attachment: {id, name, size, sha256, content_type}` and `file_id`.
#[utoipa::path(post, path = "/v1/runs", tag = "runs",
    request_body(content((StartRun = "application/json"), (StartRunForm = "multipart/form-data"))),
    params(IdempotencyKey, TraceParent, ViewQuery),
    responses((status = 200, body = RunOut), (status = 202, body = RunOut), (status = 400, body = ProblemDoc, description = "An unknown `view`"), (status = 404, body = ProblemDoc),
        (status = 409, description = "The workflow is archived, it refuses runs past its concurrency limit, or the `Idempotency-Key` was used with another body or is still in flight.", body = ProblemDoc),
        (status = 413, body = ProblemDoc), (status = 422, body = ProblemDoc),
        (status = 429, description = "Over the tenant's start rate, or the tenant already has `--tenant-max-pending` runs waiting to start (`backlog-full`); `Retry-After` says when to try again.", body = ProblemDoc)))]
async fn start(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    view: Result<Query<ViewQuery>, axum::extract::rejection::QueryRejection>,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require("runs:start")?;
    let detail = view?.detail();
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    // `identity` is what the Idempotency-Key is checked against: the body,
    // with an attachment named by its content hash rather than its new id.
    let (body, identity) = if content_type.starts_with("multipart/form-data") {
        let form = axum::extract::Multipart::from_request(request, &state)
            .await
            .map_err(|e| {
                ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
            })?;
        super::files::multipart_run_body(&state, &principal, form).await?
    } else {
        if !(content_type.starts_with("application/json") || content_type.contains("+json")) {
            return Err(ApiError::Unsupported(
                "send JSON with content-type: application/json, or multipart/form-data".into(),
            ));
        }
        let bytes = axum::body::to_bytes(request.into_body(), super::MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(super::MAX_BODY_BYTES))?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        (body.clone(), body)
    };
    state.limiter.start_run(&principal.tenant_id)?;
    let mut body = body;
    super::dto::integral_floats(&mut body, &["wait_ms"]);
    let request: StartRun = serde_json::from_value(body)
        .map_err(|e| ApiError::Unprocessable(format!("invalid request: {e}")))?;
    if request.wait_ms.is_some_and(|w| w > MAX_WAIT_MS) {
        return Err(ApiError::Unprocessable(format!(
            "wait_ms is at most {MAX_WAIT_MS}"
        )));
    }
    let tenant = &principal.tenant_id;
    // The key is stored with the run, in the transaction that creates it:
    // a repeated start (concurrent, during the first's wait_ms, or after a
    // crash left it in doubt) answers with the first one's run.
    let key = idempotency_key(&headers)?;
    let request_hash = body_hash(&identity);
    let start_key = key.as_deref().map(|key| StartKey {
        key,
        route: START_ROUTE,
        request_hash: &request_hash,
    });
    let mut started = None;
    if let Some(key) = &key {
        let mut conn = state.engine.db.reader().await?;
        if let Some(stored) =
            db::state::idempotency_get(&mut conn, tenant, key, START_ROUTE).await?
        {
            if stored.request_hash != request_hash {
                return Err(reused_key(key));
            }
            match stored.run_id {
                Some(id) => started = Some(Started::Existing(id)),
                // An answer stored before starts kept their run's id.
                None => return Ok(replay(&stored)),
            }
        }
    }
    let started = match started {
        Some(started) => started,
        None => {
            // On a task of its own, so a client that goes away cannot stop
            // the start halfway: once its transaction commits, the steps it
            // claimed are started here (see `Engine::claim_first`).
            let engine = state.engine.clone();
            let tenant = tenant.clone();
            let (workflow, version, preset) = (request.workflow, request.version, request.preset);
            let (input, labels) = (request.input, request.labels.unwrap_or_default());
            let priority = request.priority;
            let key = start_key.map(|k| (k.key.to_owned(), k.request_hash.to_owned()));
            let traceparent = headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let start = async move {
                let spec = StartSpec {
                    workflow: &workflow,
                    version: version.as_deref(),
                    input,
                    labels,
                    preset: preset.as_deref(),
                    priority,
                };
                let key = key.as_ref().map(|(key, request_hash)| StartKey {
                    key,
                    route: START_ROUTE,
                    request_hash,
                });
                engine
                    .start_run(&tenant, spec, key, traceparent.as_deref())
                    .await
            }
            .instrument(tracing::Span::current());
            tokio::spawn(start)
                .await
                .map_err(|e| ApiError::Internal(format!("the start stopped: {e}")))??
        }
    };
    let run = match started {
        Started::Created(run) => *run,
        Started::Existing(id) => {
            let mut conn = state.engine.db.reader().await?;
            db::runs::get_run(&mut conn, tenant, &id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("run {id:?}")))?
        }
        Started::KeyReused => return Err(reused_key(key.as_deref().unwrap_or_default())),
    };
    match request.wait_ms {
        None => Ok((StatusCode::ACCEPTED, Json(json(RunOut::summary(&run))?))),
        Some(wait) => {
            let view = state
                .engine
                .wait_for_run(tenant, &run.id, Duration::from_millis(wait), detail)
                .await?;
            // It returns when the run ends or pauses: both are answers.
            let settled = view.run.status.is_terminal() || view.run.status == Status::Paused;
            let status = if settled {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok((status, Json(json(RunOut::full(&view))?)))
        }
    }
}

/// `GET /v1/runs`'s query. Read by hand from the query's pairs (see
/// [`ListQuery::from_pairs`]): `label` may be repeated.
#[derive(Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    workflow: Option<String>,
    #[param(value_type = Option<RunStatusDoc>, inline)]
    status: Option<String>,
    /// `name:value`; repeat it for runs that carry every one (at most 5).
    #[param(value_type = Option<Vec<LabelFilterDoc>>, inline, max_items = 5)]
    label: Vec<(String, String)>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<String>,
}

impl ListQuery {
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut query = Self::default();
        let once = |slot: &mut Option<String>, name: &str, value: String| {
            if slot.is_some() {
                return Err(ApiError::BadRequest(format!(
                    "Failed to deserialize query string: duplicate field `{name}` (only label may repeat)"
                )));
            }
            *slot = Some(value);
            Ok(())
        };
        for (name, value) in pairs {
            match name.as_str() {
                "workflow" => once(&mut query.workflow, &name, value)?,
                "status" => once(&mut query.status, &name, value)?,
                "cursor" => once(&mut query.cursor, &name, value)?,
                "limit" => {
                    query.limit = Some(value.parse().map_err(|_| {
                        ApiError::BadRequest(format!(
                            "Failed to deserialize query string: limit must be an integer from 1 to 100, found {value:?}"
                        ))
                    })?);
                }
                "label" => query
                    .label
                    .push(labels::parse_filter(&value).map_err(ApiError::Unprocessable)?),
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "Failed to deserialize query string: unknown field `{other}`, expected one of `workflow`, `status`, `label`, `limit`, `cursor`"
                    )));
                }
            }
        }
        Ok(query)
    }
}

/// A label filter: `name:value` (the name 1-64 letters, digits, `_ - . /`;
/// the value 1-256 characters, no control characters).
#[derive(utoipa::ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,63}:[^\x00-\x1f\x7f-\x9f]{1,256}$")]
#[allow(dead_code, reason = "documents the parameter")]
struct LabelFilterDoc(String);

/// A run's status.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code, reason = "documents the allowed values")]
#[serde(rename_all = "lowercase")]
enum RunStatusDoc {
    Pending,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
    Terminated,
    Declined,
}

/// Runs, newest first; by workflow, status and labels
/// (`?label=customer:c-42&label=case:7` for runs with both).
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, body = RunList), (status = 400, body = ProblemDoc, description = "An unknown parameter"),
        (status = 422, body = ProblemDoc, description = "An unknown status, a label filter that is not `name:value`, or more than 5 label filters")))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunList>, ApiError> {
    principal.require("runs:read")?;
    let Query(pairs) = query?;
    let query = ListQuery::from_pairs(pairs)?;
    let limit = page_limit(query.limit)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).map_err(|_| {
            let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            crate::engine::EngineError::InvalidInput(format!(
                "status {s:?} is not one of {known:?}"
            ))
        })?),
    };
    let filter = db::runs::RunFilter {
        workflow: query.workflow.as_deref(),
        status,
        labels: &query.label,
        ended_since: None,
    };
    let runs = state
        .engine
        .list_runs(
            &principal.tenant_id,
            filter,
            query.cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let (runs, next_cursor) = paginate(runs, limit, |r| r.id.clone());
    let paused: Vec<&str> = runs
        .iter()
        .filter(|r| r.status == Status::Paused)
        .map(|r| r.id.as_str())
        .collect();
    let paused_steps = if paused.is_empty() {
        Vec::new()
    } else {
        let mut conn = state.engine.db.reader().await?;
        db::runs::paused_steps(&mut conn, &principal.tenant_id, &paused).await?
    };
    let items = runs
        .iter()
        .map(|run| {
            let mut out = RunOut::summary(run);
            if run.status == Status::Paused {
                out.paused_on = Some(
                    paused_steps
                        .iter()
                        .filter(|(id, _)| *id == run.id)
                        .map(|(_, step)| step.clone())
                        .collect(),
                );
            }
            out
        })
        .collect();
    Ok(Json(RunList { items, next_cursor }))
}

/// The whole run: steps, their outputs, errors and attempts; each attempt's
/// logs and rendered input with `?view=full`.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path), ViewQuery),
    responses((status = 200, body = RunOut), (status = 400, body = ProblemDoc, description = "An unknown `view`"), (status = 404, body = ProblemDoc)))]
async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    view: Result<Query<ViewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunOut>, ApiError> {
    principal.require("runs:read")?;
    let detail = view?.detail();
    let view = state
        .engine
        .get_run(&principal.tenant_id, &id, detail)
        .await?;
    Ok(Json(RunOut::full(&view)))
}

/// Status and the steps under way, only.
#[utoipa::path(get, path = "/v1/runs/{id}/status", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = RunStatus), (status = 404, body = ProblemDoc)))]
async fn status(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<RunStatus>, ApiError> {
    principal.require("runs:read")?;
    let view = state
        .engine
        .get_run(&principal.tenant_id, &id, Detail::Compact)
        .await?;
    Ok(Json(RunStatus {
        id: view.run.id,
        status: view.run.status.as_str().to_owned(),
        current_steps: view
            .steps
            .iter()
            .filter(|s| {
                matches!(
                    s.status,
                    StepStatus::Running | StepStatus::Ready | StepStatus::Held | StepStatus::Paused
                )
            })
            .map(|s| s.step_id.clone())
            .collect(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// An event id: only later events.
    #[param(value_type = Option<i64>)]
    cursor: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// The run's event log, oldest first; `Accept: text/event-stream` streams
/// it live until the run ends.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", params(("id" = String, Path), EventsQuery),
    responses((status = 200, body = EventList, description = "JSON, or a live text/event-stream with Accept: text/event-stream"), (status = 404, body = ProblemDoc)))]
async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    principal.require("runs:read")?;
    let Query(query) = query?;
    let after = event_cursor(query.cursor.as_deref())?.unwrap_or(0);
    if !wants_stream(&headers) {
        let limit = page_limit(query.limit.or(Some(100)))?;
        let found = state
            .engine
            .events(&principal.tenant_id, &id, after, limit + 1)
            .await?;
        let (found, next_cursor) = paginate(found, limit, |e| e.id.to_string());
        let items = found.iter().map(EventOut::from).collect();
        return Ok(Json(EventList { items, next_cursor }).into_response());
    }
    // Checks the run exists (and is this tenant's) before streaming.
    state
        .engine
        .events(&principal.tenant_id, &id, after, 1)
        .await?;
    let engine = state.engine.clone();
    let tenant = principal.tenant_id.clone();
    let mut changes = engine.subscribe();
    let stream = async_stream(move |tx| async move {
        let mut last = after;
        // Set once the run is seen finished: one more read then sends the
        // events committed between the last read and that check.
        let mut draining = false;
        loop {
            let Ok(batch) = engine.events(&tenant, &id, last, 100).await else {
                return;
            };
            for event in &batch {
                last = event.id;
                let out = EventOut::from(event);
                if !send_event(&tx, out.id, &out.r#type, &out).await {
                    return;
                }
            }
            if batch.len() == 100 {
                continue;
            }
            if draining {
                return;
            }
            let finished = engine
                .get_run(&tenant, &id, Detail::Compact)
                .await
                .map(|v| v.run.status.is_terminal())
                .unwrap_or(true);
            if finished {
                draining = true;
                continue;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.recv()).await;
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Every run's events in the caller's tenant, oldest first: the feed a
/// dashboard follows to keep run lists current. As JSON it pages from
/// `cursor` (default: the beginning). With `Accept: text/event-stream` it
/// streams live from `cursor`, the `Last-Event-ID` header, or (with
/// neither) the newest event, until the client disconnects.
#[utoipa::path(get, path = "/v1/events", tag = "runs", params(EventsQuery),
    responses((status = 200, body = TenantEventList, description = "JSON, or a live text/event-stream with Accept: text/event-stream")))]
async fn tenant_events(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    principal.require("runs:read")?;
    let Query(query) = query?;
    let resume_from = query.cursor.clone().or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let after = event_cursor(resume_from.as_deref())?;
    let tenant = principal.tenant_id.clone();
    if !wants_stream(&headers) {
        let limit = page_limit(query.limit.or(Some(100)))?;
        let found = state
            .engine
            .tenant_events(&tenant, after.unwrap_or(0), limit + 1)
            .await?;
        let (found, next_cursor) = paginate(found, limit, |e| e.id.to_string());
        let items = found.iter().map(TenantEventOut::from).collect();
        return Ok(Json(TenantEventList { items, next_cursor }).into_response());
    }
    let after = match after {
        Some(after) => after,
        None => state.engine.last_event_id(&tenant).await?,
    };
    let engine = state.engine.clone();
    let mut changes = engine.subscribe();
    let stream = async_stream(move |tx| async move {
        let mut last = after;
        loop {
            let Ok(batch) = engine.tenant_events(&tenant, last, 100).await else {
                return;
            };
            for event in &batch {
                last = event.id;
                let out = TenantEventOut::from(event);
                if !send_event(&tx, out.id, &out.r#type, &out).await {
                    return;
                }
            }
            if batch.len() == 100 {
                continue;
            }
            if tx.is_closed() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.recv()).await;
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// An event id given as a cursor (`?cursor=` or `Last-Event-ID`).
fn event_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("cursor {c:?} is not an event id")))
        })
        .transpose()
}

/// Whether the client asked for a live `text/event-stream`.
fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// Sends one event of a log as a server-sent event (`id`, `event` = its
/// type, JSON data); false once the client has gone.
async fn send_event(
    tx: &tokio::sync::mpsc::Sender<Result<SseEvent, Infallible>>,
    id: i64,
    kind: &str,
    body: &impl serde::Serialize,
) -> bool {
    let sse = SseEvent::default()
        .id(id.to_string())
        .event(kind)
        .json_data(body)
        .unwrap_or_default();
    tx.send(Ok(sse)).await.is_ok()
}

/// A stream fed by a task, ending when the task returns.
fn async_stream<F, Fut>(f: F) -> ReceiverStream<Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<SseEvent, Infallible>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    ReceiverStream::new(rx)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ItemsQuery {
    /// Only items in this status.
    #[param(value_type = Option<ItemStatusDoc>, inline)]
    status: Option<ItemStatusDoc>,
    /// An item index: only later items.
    #[param(value_type = Option<i64>, minimum = 0)]
    cursor: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `full`: also each item's last attempt's logs.
    #[param(value_type = Option<ViewDoc>, inline)]
    view: Option<ViewDoc>,
}

/// An item's status.
#[derive(Deserialize, utoipa::ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ItemStatusDoc {
    Pending,
    Running,
    Completed,
    Failed,
}

impl ItemStatusDoc {
    fn stored(self) -> db::items::ItemStatus {
        match self {
            Self::Pending => db::items::ItemStatus::Pending,
            Self::Running => db::items::ItemStatus::Running,
            Self::Completed => db::items::ItemStatus::Completed,
            Self::Failed => db::items::ItemStatus::Failed,
        }
    }
}

/// The items of a `for_each` step, in list order: each one's status,
/// attempts, output and last error; `?status=failed` for the failed ones.
/// A step without `for_each` has none: 404.
#[utoipa::path(get, path = "/v1/runs/{id}/steps/{step_id}/items", tag = "runs",
    params(("id" = String, Path), ("step_id" = String, Path), ItemsQuery),
    responses((status = 200, body = ItemList), (status = 400, body = ProblemDoc), (status = 404, body = ProblemDoc)))]
async fn items(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, step_id)): Path<(String, String)>,
    query: Result<Query<ItemsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ItemList>, ApiError> {
    principal.require("runs:read")?;
    let Query(query) = query?;
    let after =
        match query.cursor.as_deref() {
            None => -1,
            Some(c) => c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::BadRequest(format!("cursor {c:?} is not an item index"))
            })?,
        };
    let limit = page_limit(query.limit)?;
    let detail = match query.view {
        Some(ViewDoc::Full) => Detail::Full,
        Some(ViewDoc::Compact) | None => Detail::Compact,
    };
    let found = state
        .engine
        .step_items(
            &principal.tenant_id,
            &id,
            &step_id,
            query.status.map(ItemStatusDoc::stored),
            after,
            limit + 1,
        )
        .await?;
    let (found, next_cursor) = paginate(found, limit, |i| i.index.to_string());
    let items = found.iter().map(|i| ItemOut::new(i, detail)).collect();
    Ok(Json(ItemList { items, next_cursor }))
}

/// Stops scheduling new steps; running attempts finish. An optional
/// `reason` is kept in the `run.cancelled` event and the run's `reason`.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)), request_body(content = Terminate, description = "Optional reason"),
    responses((status = 200, body = RunOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RunOut>, ApiError> {
    control(state, principal, id, Control::Stop(Stop::Cancel), &body).await
}

/// Stops the run and interrupts running attempts. An optional `reason` is
/// kept in the `run.terminated` event and the run's `reason`.
#[utoipa::path(post, path = "/v1/runs/{id}/terminate", tag = "runs", params(("id" = String, Path)), request_body(content = Terminate, description = "Optional reason"),
    responses((status = 200, body = RunOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn terminate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RunOut>, ApiError> {
    control(state, principal, id, Control::Stop(Stop::Terminate), &body).await
}

/// What a control request does.
enum Control {
    Stop(Stop),
    /// Pause (true) or unpause.
    Hold(bool),
}

/// Cancel, terminate, pause or unpause, with the optional `{reason}` body
/// (empty allowed); answers with the run as it is then.
async fn control(
    state: AppState,
    principal: Principal,
    id: String,
    what: Control,
    body: &[u8],
) -> Result<Json<RunOut>, ApiError> {
    principal.require("runs:control")?;
    let reason = reason_body(body)?.reason;
    let tenant = &principal.tenant_id;
    match what {
        Control::Stop(how) => {
            state
                .engine
                .stop_run(Some(tenant), &id, how, reason.as_deref())
                .await?;
        }
        Control::Hold(hold) => {
            state
                .engine
                .hold_run(tenant, &id, hold, reason.as_deref())
                .await?;
        }
    }
    let view = state.engine.get_run(tenant, &id, Detail::Compact).await?;
    Ok(Json(RunOut::full(&view)))
}

/// Pauses the run: no new step starts (ready steps become `held`, and so
/// does every step that becomes ready later); attempts under way finish and
/// are recorded; a human step that would pause is held too (no task until
/// it is unpaused). The run keeps its status (a run waiting for a person
/// stays `paused`) and gets `held_at`; a `run.held` event carries the
/// optional `reason`. Pausing a run that already has `held_at` changes
/// nothing. Cancel and terminate still work; `max_duration_ms` still counts.
#[utoipa::path(post, path = "/v1/runs/{id}/pause", tag = "runs", params(("id" = String, Path)), request_body(content = Terminate, description = "Optional reason"),
    responses((status = 200, body = RunOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc, description = "The run is finished")))]
async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RunOut>, ApiError> {
    control(state, principal, id, Control::Hold(true), &body).await
}

/// Unpauses a paused run: its held steps start again, each at its own due
/// time (a retry's backoff or a `wait` is kept). Unpausing a run that is
/// not paused changes nothing.
#[utoipa::path(post, path = "/v1/runs/{id}/unpause", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = RunOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc, description = "The run is finished")))]
async fn unpause(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<RunOut>, ApiError> {
    control(state, principal, id, Control::Hold(false), &[]).await
}

/// The optional `{reason}` body of a cancel, terminate or pause (empty
/// allowed).
fn reason_body(body: &[u8]) -> Result<Terminate, ApiError> {
    let request: Terminate = if body.iter().all(u8::is_ascii_whitespace) {
        Terminate::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?
    };
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REASON_BYTES)
    {
        return Err(ApiError::Unprocessable(format!(
            "reason is at most {MAX_REASON_BYTES} bytes"
        )));
    }
    Ok(request)
}

/// Longest `reason` a cancel, terminate or pause keeps.
const MAX_REASON_BYTES: usize = 4096;

/// Resumes a paused step with `data` or `action`, completes a step by hand
/// with `override_output`, or retries a failed step with only `step_id`.
#[utoipa::path(post, path = "/v1/runs/{id}/resume", tag = "runs", params(("id" = String, Path)), request_body = ResumeRun,
    responses((status = 200, body = RunOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RunOut>, ApiError> {
    principal.require("runs:control")?;
    let Json(body) = body?;
    let request: ResumeRun = serde_json::from_value(body)
        .map_err(|e| ApiError::Unprocessable(format!("invalid request: {e}")))?;
    let what = match (request.data, request.action, request.override_output) {
        (Some(data), None, None) => Resume::Data(data),
        (None, Some(action), None) => Resume::Action(action),
        (None, None, Some(output)) => Resume::Override(output),
        (None, None, None) => Resume::Retry,
        _ => {
            return Err(ApiError::Unprocessable(
                "give at most one of data, action and override_output".into(),
            ));
        }
    };
    state
        .engine
        .resume(&principal.tenant_id, &id, &request.step_id, what)
        .await?;
    let view = state
        .engine
        .get_run(&principal.tenant_id, &id, Detail::Compact)
        .await?;
    Ok(Json(RunOut::full(&view)))
}

/// Starts a new run of this run's workflow version that keeps the outputs
/// of the steps `from_step` does not lead to and runs `from_step` and
/// everything after it again, with new `input` if given (else the old
/// run's). The new run carries the old one's labels and `rerun_of`; the
/// old run's feed gets `run.rerun`. Only a finished run can be re-run.
#[utoipa::path(post, path = "/v1/runs/{id}/rerun", tag = "runs", params(("id" = String, Path), IdempotencyKey), request_body = RerunRun,
    responses((status = 201, body = RunOut), (status = 404, body = ProblemDoc),
        (status = 409, body = ProblemDoc, description = "The run is not finished, the workflow is archived, or it refuses runs past its concurrency limit"),
        (status = 429, body = ProblemDoc, description = "The tenant already has `--tenant-max-pending` runs waiting to start"),
        (status = 422, body = ProblemDoc, description = "An unknown step, or input that does not match the workflow's input_schema")))]
async fn rerun(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require("runs:start")?;
    let Json(body) = body?;
    let tenant = principal.tenant_id.clone();
    let route = format!("POST /v1/runs/{id}/rerun");
    super::idempotent_create(&state, &tenant, &headers, &route, body, |body| async {
        let request: RerunRun = serde_json::from_value(body)
            .map_err(|e| ApiError::Unprocessable(format!("invalid request: {e}")))?;
        let run = state
            .engine
            .rerun(&tenant, &id, &request.from_step, request.input)
            .await?;
        json(RunOut::summary(&run))
    })
    .await
}

/// Retries every failed step of each failed run of a workflow (those that
/// failed at or after `since`, if given), newest first, at most 500 runs a
/// call (and 5,000 looked at): `more` says to call again. A run it cannot
/// retry (past its `max_duration_ms`, no room under the workflow's
/// concurrency limit) is listed in `not_retried` and passed over.
#[utoipa::path(post, path = "/v1/runs:retry-failed", tag = "runs", request_body = RetryFailed,
    responses((status = 200, body = RetryFailedOut), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn retry_failed(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RetryFailedOut>, ApiError> {
    principal.require("runs:control")?;
    let Json(body) = body?;
    let request: RetryFailed = serde_json::from_value(body)
        .map_err(|e| ApiError::Unprocessable(format!("invalid request: {e}")))?;
    let since = request
        .since
        .as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| {
                    ApiError::Unprocessable(format!(
                        "since must be an RFC 3339 time such as 2026-12-01T00:00:00Z, found {s:?}: {e}"
                    ))
                })
        })
        .transpose()?;
    // The workflow must exist.
    state
        .engine
        .get_workflow(
            &principal.tenant_id,
            &request.workflow,
            &crate::engine::workflows::Selector::Latest,
        )
        .await?;
    let done = state
        .engine
        .retry_failed(&principal.tenant_id, &request.workflow, since)
        .await?;
    Ok(Json(RetryFailedOut {
        retried: done.retried.len(),
        run_ids: done.retried,
        not_retried: done
            .not_retried
            .into_iter()
            .map(|(run_id, reason)| NotRetried { run_id, reason })
            .collect(),
        more: done.more,
    }))
}
