//! Traces over OTLP (HTTP with protobuf bodies), off unless an endpoint is
//! configured.
//!
//! When on, [`init`] installs a tracer whose batch exporter runs on the
//! tokio runtime; the `tracing` spans whose target is [`TARGET`] (and only
//! those) become OpenTelemetry spans. When off, nothing here is set up and
//! every call site pays one branch on [`enabled`].
//!
//! A run's span cannot live in one process: its attempts run later, on any
//! host, after restarts. So the run span's identity is chosen when the run
//! is created ([`new_run`], stored with the run as a W3C `traceparent`),
//! attempt spans name it as their parent wherever they run, and the run
//! span itself is exported once, when the run ends ([`run_ended`]), with
//! the run's creation as its start.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, Sampler, SdkTracer};

use crate::db::runs::{RunRow, RunStatus};

/// The target of the `tracing` spans that are exported; the OTLP layer is
/// filtered to it, so the host's other spans stay log context only.
pub const TARGET: &str = "weft::otel";

/// Default share of database transactions on the hot path given a span.
pub const DEFAULT_DB_SAMPLE_RATIO: f64 = 0.01;

/// Set once by [`init`]; its absence is what "off" means.
static TRACING: OnceLock<Tracing> = OnceLock::new();

struct Tracing {
    /// For the spans `tracing` cannot express: a run's, whose id and start
    /// time were fixed when the run was created.
    tracer: SdkTracer,
    /// Share of hot-path transactions traced (0 to 1).
    db_sample_ratio: f64,
}

/// What `weft serve` was asked for.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of an OTLP/HTTP receiver (`/v1/traces` is appended), like
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; `None` leaves it to the standard
    /// variables.
    pub endpoint: Option<String>,
    pub db_sample_ratio: f64,
}

impl Config {
    /// Whether traces are wanted: an endpoint given here or in one of the
    /// standard variables.
    pub fn wanted(&self) -> bool {
        self.endpoint.as_deref().is_some_and(|e| !e.is_empty())
            || [
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|e| !e.is_empty()))
    }
}

/// Exports what was recorded when dropped or shut down.
pub struct Guard {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Guard {
    /// Flushes the spans not yet sent and stops the exporter. Call it from
    /// outside the runtime's worker threads, with the runtime still alive:
    /// the export runs there.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces at shutdown failed");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("the OTLP HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("--otlp-db-sample-ratio must be between 0 and 1, not {0}")]
    Ratio(f64),
}

/// Sets up the exporter if traces are wanted and returns the tracer for the
/// `tracing` layer. Must run inside the tokio runtime (the batch exporter
/// is a task on it).
pub fn init(config: &Config) -> Result<Option<(SdkTracer, Guard)>, TelemetryError> {
    if !(0.0..=1.0).contains(&config.db_sample_ratio) {
        return Err(TelemetryError::Ratio(config.db_sample_ratio));
    }
    if !config.wanted() {
        return Ok(None);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(endpoint) = config.endpoint.as_deref().filter(|e| !e.is_empty()) {
        exporter = exporter.with_endpoint(traces_url(endpoint));
    }
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter.build()?,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("weft");
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        // A caller's decision not to sample is kept; runs without a caller
        // are always sampled (their database spans are sampled apart).
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .build();
    let tracer = provider.tracer("weft");
    let _ = TRACING.set(Tracing {
        tracer: tracer.clone(),
        db_sample_ratio: config.db_sample_ratio,
    });
    Ok(Some((tracer, Guard { provider })))
}

/// The layer that turns the spans of [`TARGET`] (only those, whatever the
/// log level) into OpenTelemetry spans for `tracer`.
pub fn layer<S>(tracer: SdkTracer) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::TRACE),
        )
}

/// The traces URL for a base endpoint, as the exporter does for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// Whether traces are exported (the one branch when they are not).
#[inline]
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// A new run's trace context, if traces are exported: the run span's
/// `traceparent` (a child of `caller`'s, the incoming header, when that is
/// valid; a new trace otherwise, as W3C Trace Context asks) and the
/// caller's span id.
pub fn new_run(caller: Option<&str>) -> Option<(String, Option<String>)> {
    TRACING.get()?;
    let ids = RandomIdGenerator::default();
    let caller = caller.and_then(parse).filter(SpanContext::is_valid);
    let (trace_id, flags) = match &caller {
        Some(c) => (c.trace_id(), c.trace_flags()),
        None => (ids.new_trace_id(), TraceFlags::SAMPLED),
    };
    let own = format_traceparent(trace_id, ids.new_span_id(), flags);
    Some((own, caller.map(|c| c.span_id().to_string())))
}

/// Exports the span of a run that just ended, from its creation to its end.
pub fn run_ended(run: &RunRow) {
    let Some(tracing) = TRACING.get() else {
        return;
    };
    let Some(own) = run.traceparent.as_deref().and_then(parse) else {
        return;
    };
    let parent = match run
        .trace_parent_span_id
        .as_deref()
        .and_then(|s| SpanId::from_hex(s).ok())
    {
        Some(span_id) => Context::new().with_remote_span_context(SpanContext::new(
            own.trace_id(),
            span_id,
            own.trace_flags(),
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    let mut builder = tracing
        .tracer
        .span_builder("run")
        .with_kind(SpanKind::Internal)
        .with_start_time(at_ms(run.created_at))
        .with_attributes([
            KeyValue::new("weft.run_id", run.id.clone()),
            KeyValue::new("weft.tenant", run.tenant_id.clone()),
            KeyValue::new("weft.workflow", run.workflow_key.clone()),
            KeyValue::new("weft.workflow.version", run.workflow_version.clone()),
            KeyValue::new("weft.run.status", run.status.as_str()),
        ]);
    builder.trace_id = Some(own.trace_id());
    builder.span_id = Some(own.span_id());
    let mut span = builder.start_with_context(&tracing.tracer, &parent);
    if matches!(run.status, RunStatus::Failed | RunStatus::Terminated) {
        span.set_status(Status::error(run.status.as_str()));
    }
    span.end_with_timestamp(at_ms(run.ended_at.unwrap_or_else(crate::db::now_ms)));
}

/// Makes `span` a child of the stored `traceparent` (a run's), wherever
/// and whenever it runs.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if let Some(parent) = parse(traceparent) {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
}

/// The W3C `traceparent` of `span`, for an outbound request it makes.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid()
        .then(|| format_traceparent(sc.trace_id(), sc.span_id(), sc.trace_flags()))
}

/// Whether this hot-path database transaction gets a span: a `ratio`
/// share of them, when traces are exported.
pub fn sample_db() -> bool {
    TRACING
        .get()
        .is_some_and(|t| t.db_sample_ratio > 0.0 && rand::random::<f64>() < t.db_sample_ratio)
}

/// A `traceparent` as a span context, `None` when it is not valid.
fn parse(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let sc = context.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

fn format_traceparent(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> String {
    format!("00-{trace_id}-{span_id}-{:02x}", flags.to_u8())
}

fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_only_when_valid() {
        let cases = [
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                true,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                true,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                false,
            ),
            ("not a traceparent", false),
            ("", false),
        ];
        for (text, valid) in cases {
            let parsed = parse(text);
            assert_eq!(parsed.is_some(), valid, "{text}");
            if let Some(sc) = parsed {
                assert_eq!(
                    format_traceparent(sc.trace_id(), sc.span_id(), sc.trace_flags()),
                    text
                );
            }
        }
    }

    #[test]
    fn an_endpoint_is_a_base_url_for_traces() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
    }
}
