//! The workflow engine: definitions, the DAG, templates, the scheduler and
//! the run state machine. It never imports axum; the API calls the methods
//! here and turns the results into HTTP.
//!
//! The main path, in [`scheduler`]: claim due steps under a lease → render
//! the step's config → `runtime.invoke(plugin, config, input)` → record the
//! result and schedule dependents in one transaction → wake the scheduler.
//!
//! # Layout
//! - [`definition`]: the definition's shape and validation.
//! - [`template`]: `{{…}}` templates and `if` conditions.
//! - [`advance`]: the run state machine, pure.
//! - [`scheduler`]: claiming, executing and recording attempts.
//! - `background`: run deadlines and the SMTP outbox sender.
//! - [`schedules`], [`cron`]: cron schedules in a time zone that start runs.
//! - [`webhooks`]: subscriptions, fan-out from the event log, signed delivery.
//! - [`workflows`], [`runs`]: what the API calls.
//! - [`plugins`]: the plugins a tenant can use and their grants.
//! - [`marketplace`]: uploading, yanking, listing and granting plugins.
//! - [`services`]: host services backed by the database.
//! - `peers`: hosts sharing a Postgres database notify each other of changes.

pub mod advance;
mod background;
pub mod cron;
pub mod definition;
pub mod labels;
mod map;
pub mod marketplace;
mod peers;
pub mod plugins;
pub mod rerun;
pub mod runs;
pub mod scheduler;
pub mod schedules;
pub mod secrets;
pub mod services;
pub mod tasks;
pub mod template;
pub mod webhooks;
pub mod workflows;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError};
use crate::mail::{MailRetry, SmtpRelay};
use crate::runtime::Runtime;
pub use definition::{Definition, Problem};
use plugins::Plugins;

/// Why an engine operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Refused by the workflow's `concurrency` or `min_interval_ms`.
    #[error("{message}")]
    Overlap { message: String, run_id: String },
    /// The tenant already has `tenant_max_pending` runs waiting to start.
    #[error("{message}")]
    Backlog { message: String, retry_after: u64 },
    #[error("the workflow definition is invalid")]
    InvalidDefinition(Vec<Problem>),
    #[error("{0}")]
    InvalidInput(String),
    /// A run this needs to change is being written elsewhere: try again.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Identifies this process in leases.
    pub host_id: String,
    /// How long a claimed step stays ours without renewal.
    pub lease: Duration,
    /// Attempts this host runs at once.
    pub max_parallel: usize,
    /// Attempts one tenant may have running at once (across hosts); more
    /// wait in the queue. `usize::MAX`: no cap (nothing to count, and on
    /// Postgres no shares of it to hold).
    pub tenant_max_running: usize,
    /// Runs one tenant may have waiting to start (`pending`); a start past
    /// it is refused (429 with Retry-After). `usize::MAX`: no limit.
    pub tenant_max_pending: usize,
    /// Finished runs older than this are deleted with their steps,
    /// attempts and events; `None` keeps them for ever.
    pub retention: Option<Duration>,
    /// Longest the scheduler sleeps without a wake-up (catches leases that
    /// expire and timers).
    pub poll: Duration,
    pub smtp: Option<SmtpRelay>,
    /// When the outbox sender tries a message again, and when it gives up.
    pub mail_retry: MailRetry,
    /// Largest plugin component a tenant may upload.
    pub max_upload_bytes: usize,
    /// Bytes of uploaded plugin components one tenant may store.
    pub tenant_plugin_storage_bytes: usize,
    /// Seals tenant secrets at rest; without one, secrets cannot be stored.
    pub secrets: Option<Arc<secrets::SecretBox>>,
    /// Added to the wall clock for schedules: lets tests start the server
    /// "at" a chosen time instead of sleeping until it.
    pub clock_offset_ms: i64,
    pub webhooks: webhooks::WebhookConfig,
    /// Which OCI registries `POST /v1/plugins {"oci": …}` may pull from.
    pub oci: OciConfig,
    /// The base of task links (`<public url>/t/<token>`).
    pub public_url: String,
}

/// The operator's OCI registry settings.
#[derive(Debug, Clone, Default)]
pub struct OciConfig {
    /// Registries (`host` or `host:port`) plugins may be pulled from;
    /// empty: none.
    pub allow: Vec<String>,
    pub registries: crate::oci::RegistryOptions,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            host_id: format!("host-{}", uuid::Uuid::now_v7().simple()),
            lease: Duration::from_secs(15),
            max_parallel: 32,
            tenant_max_running: 16,
            tenant_max_pending: DEFAULT_TENANT_MAX_PENDING,
            retention: None,
            poll: Duration::from_millis(500),
            smtp: None,
            mail_retry: MailRetry::default(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            tenant_plugin_storage_bytes: 256 << 20,
            secrets: None,
            clock_offset_ms: 0,
            webhooks: webhooks::WebhookConfig::default(),
            oci: OciConfig::default(),
            public_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// Default for [`EngineConfig::tenant_max_pending`].
pub const DEFAULT_TENANT_MAX_PENDING: usize = 10_000;

/// Default for [`EngineConfig::max_upload_bytes`]: 32 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 32 << 20;

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub attempts_completed: AtomicU64,
    pub attempts_failed: AtomicU64,
    /// Attempt durations: counts per bucket of [`DURATION_BUCKETS_MS`], then +Inf.
    pub duration_buckets: [AtomicU64; 12],
    pub duration_sum_us: AtomicU64,
    /// Finished runs deleted by `--retention`.
    pub runs_deleted: AtomicU64,
}

pub const DURATION_BUCKETS_MS: [f64; 11] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0, 30000.0,
];

pub struct Engine {
    pub db: Db,
    pub runtime: Arc<Runtime>,
    pub plugins: Plugins,
    pub config: EngineConfig,
    pub metrics: Metrics,
    /// Wakes the scheduler: new ready steps, freed slots.
    wake: Notify,
    /// Wakes the schedule loop: a schedule was created or changed.
    schedule_wake: Notify,
    /// Wakes the webhook loop: new events, changed subscriptions.
    webhook_wake: Notify,
    /// Wakes the task loop: a run changed (it may have paused), a task
    /// changed.
    task_wake: Notify,
    /// Tells listeners (waiting starts, event streams) that a run changed.
    changes: broadcast::Sender<RunChanged>,
    /// Attempts running here, by (run id, step id), to interrupt them.
    running: Mutex<HashMap<(String, String), CancellationToken>>,
    in_flight: AtomicUsize,
    /// Set while the scheduler's last pass found steps due: a recorded
    /// batch or an attempt that frees its slot then wakes it (freed slots
    /// may let it claim them); otherwise only a batch that leaves steps
    /// ready or ends a run does.
    backlog: std::sync::atomic::AtomicBool,
    /// Parsed definitions by (tenant, key, version): versions are immutable.
    definitions: Mutex<HashMap<(String, String, String), Arc<Definition>>>,
    /// What the recorder last wrote for runs with steps in flight here,
    /// with the run's version then (SQLite): the next record of such a run
    /// reads only its version, not its steps.
    recorded: Mutex<HashMap<String, scheduler::Recorded>>,
    /// Each tenant's count of pending runs, when it was read, and the
    /// starts accepted since: read again at most once a second.
    pending: Mutex<HashMap<String, runs::PendingCount>>,
    /// Finished attempts and progress reports on their way to the
    /// recorder.
    to_record: tokio::sync::mpsc::UnboundedSender<scheduler::ToRecord>,
    /// The recorder's end, taken when the engine starts.
    to_record_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<scheduler::ToRecord>>>,
    /// Runs changed here, to tell other hosts (Postgres only).
    peers: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// The publisher's end, taken when the engine starts.
    peers_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// Compiled JSON Schema validators by sha256 of the schema's text:
    /// plugin config schemas, workflow input schemas, collect_inputs schemas.
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    /// Postgres under a tenant cap: this host's share of each tenant's cap
    /// (`db::slots`) and when the shares were last set.
    shares: Mutex<scheduler::Shares>,
    /// Postgres under a tenant cap: per tenant, the gate this host's claims
    /// for the tenant pass one at a time, so each counts what the one
    /// before it claimed.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Engine {
    pub fn new(db: Db, runtime: Arc<Runtime>, plugins: Plugins, config: EngineConfig) -> Arc<Self> {
        let (changes, _) = broadcast::channel(1024);
        let (to_record, to_record_rx) = tokio::sync::mpsc::unbounded_channel();
        let (peers, peers_rx) = if db.exclusive() {
            (None, None)
        } else {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        };
        Arc::new(Self {
            db,
            runtime,
            plugins,
            config,
            metrics: Metrics::default(),
            wake: Notify::new(),
            schedule_wake: Notify::new(),
            webhook_wake: Notify::new(),
            task_wake: Notify::new(),
            changes,
            running: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            backlog: std::sync::atomic::AtomicBool::new(true),
            definitions: Mutex::default(),
            recorded: Mutex::default(),
            pending: Mutex::default(),
            validators: Mutex::default(),
            shares: Mutex::default(),
            gates: Mutex::default(),
            to_record,
            to_record_rx: Mutex::new(Some(to_record_rx)),
            peers,
            peers_rx: Mutex::new(peers_rx),
        })
    }

    /// Receives every run that changes.
    pub fn subscribe(&self) -> broadcast::Receiver<RunChanged> {
        self.changes.subscribe()
    }

    /// Checks `value` against `schema` like [`definition::check_schema`],
    /// compiling each schema once.
    pub(crate) fn check_against(
        &self,
        id: &str,
        what: &str,
        schema: &serde_json::Value,
        value: &serde_json::Value,
        problems: &mut Vec<Problem>,
    ) {
        use sha2::Digest as _;
        let key = hex::encode(sha2::Sha256::digest(schema.to_string().as_bytes()));
        let cached = lock(&self.validators).get(&key).cloned();
        let validator = match cached {
            Some(v) => v,
            None => match jsonschema::validator_for(schema) {
                Ok(v) => {
                    let v = Arc::new(v);
                    lock(&self.validators).insert(key, v.clone());
                    v
                }
                // Reported with the reason by check_schema below.
                Err(_) => return definition::check_schema(id, what, schema, value, problems),
            },
        };
        definition::report_errors(&validator, id, what, value, problems);
    }

    /// Whether a tenant cap on running steps is enforced.
    fn capped(&self) -> bool {
        self.config.tenant_max_running != usize::MAX
    }

    /// Tells listeners and other hosts that run `run_id` changed.
    fn changed(&self, run_id: &str) {
        self.tell(run_id, None);
    }

    /// [`Self::changed`], saying the run's status as just committed.
    fn changed_to(&self, run: &crate::db::runs::RunRow) {
        self.tell(&run.id, Some(run.status));
    }

    fn tell(&self, run_id: &str, status: Option<crate::db::runs::RunStatus>) {
        let _ = self.changes.send(RunChanged {
            id: run_id.to_owned(),
            status,
        });
        if let Some(peers) = &self.peers {
            let _ = peers.send(run_id.to_owned());
        }
        self.webhook_wake.notify_one();
        self.task_wake.notify_one();
    }
}

/// A run that changed, as its listeners hear of it.
#[derive(Clone, Debug)]
pub struct RunChanged {
    pub id: String,
    /// The run's status after the change, when the one who changed it
    /// said (the recorder and the claim do; other changes, and other
    /// hosts' notices, do not).
    pub status: Option<crate::db::runs::RunStatus>,
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
