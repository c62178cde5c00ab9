//! Operations: `/healthz`, `/readyz`, `/metrics` (Prometheus text).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};
use crate::db;
use crate::engine::DURATION_BUCKETS_MS;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(), responses((status = 200, description = "ok")))]
async fn healthz() -> &'static str {
    "ok"
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(),
    responses((status = 200, description = "ready"), (status = 503, description = "database unreachable")))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.engine.db.ping().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    }
}

/// Prometheus metrics: runs by status, step attempts, attempt durations,
/// queue depth.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(), responses((status = 200, description = "Prometheus text format")))]
async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let engine = &state.engine;
    let mut conn = engine.db.reader().await?;
    let counts = db::runs::run_counts(&mut conn).await?;
    let depth = db::runs::queue_depth(&mut conn, db::now_ms()).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP weft_runs Runs by status.\n# TYPE weft_runs gauge"
    );
    for (status, n) in counts {
        let _ = writeln!(out, "weft_runs{{status=\"{status}\"}} {n}");
    }
    let m = &engine.metrics;
    let _ = writeln!(
        out,
        "# HELP weft_step_attempts_total Step attempts run by this host.\n# TYPE weft_step_attempts_total counter"
    );
    let _ = writeln!(
        out,
        "weft_step_attempts_total{{outcome=\"completed\"}} {}",
        m.attempts_completed.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "weft_step_attempts_total{{outcome=\"failed\"}} {}",
        m.attempts_failed.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP weft_attempt_duration_seconds Step attempt duration.\n# TYPE weft_attempt_duration_seconds histogram"
    );
    let mut cumulative = 0;
    for (i, bound) in DURATION_BUCKETS_MS.iter().enumerate() {
        cumulative += m.duration_buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "weft_attempt_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
            bound / 1000.0
        );
    }
    cumulative += m.duration_buckets[DURATION_BUCKETS_MS.len()].load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "weft_attempt_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "weft_attempt_duration_seconds_sum {}",
        m.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "weft_attempt_duration_seconds_count {cumulative}");
    let _ = writeln!(
        out,
        "# HELP weft_runs_deleted_total Finished runs deleted past the retention (--retention) by this host.\n# TYPE weft_runs_deleted_total counter\nweft_runs_deleted_total {}",
        m.runs_deleted.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP weft_queue_depth Steps ready to run now.\n# TYPE weft_queue_depth gauge\nweft_queue_depth {depth}"
    );
    let c = &state.connections;
    let _ = writeln!(
        out,
        "# HELP weft_http_connections Open HTTP connections.\n# TYPE weft_http_connections gauge\nweft_http_connections {}",
        c.open.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP weft_http_connections_closed_total HTTP connections refused at the limit or closed when idle.\n# TYPE weft_http_connections_closed_total counter\nweft_http_connections_closed_total{{reason=\"limit\"}} {}\nweft_http_connections_closed_total{{reason=\"idle\"}} {}",
        c.refused.load(Ordering::Relaxed),
        c.idle_closed.load(Ordering::Relaxed)
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
