//! The sandbox: loads step plugins (WebAssembly components of the
//! `weft:plugin` world) and runs one attempt at a time, each in a fresh
//! `Store` with memory, time, output and log limits.
//!
//! - One async [`wasmtime::Engine`] with the pooling allocator and epoch
//!   interruption (a thread ticks the epoch every [`EPOCH_TICK`]).
//! - Components are compiled once per content hash: kept in memory, and
//!   serialized to `cache_dir` so a restart does not recompile.
//! - Each attempt instantiates from an `InstancePre`, gets an empty WASI
//!   (no files, env, args or sockets), and reaches the world only through
//!   [`Services`] filtered by [`Grants`], and outbound HTTP only to
//!   addresses the operator's [`EgressPolicy`] allows.
//!
//! The runtime never touches the database: whatever persists reaches it
//! through the traits in [`services`].

mod bindings;
mod cache;
mod error;
#[doc(hidden)]
pub mod floor;
mod grants;
mod http_gate;
mod kv;
mod limits;
mod output;
mod sandbox;
pub mod services;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

pub use error::{AttemptError, LoadError};
pub use grants::Grants;
pub use limits::Limits;
pub use sandbox::MAX_FILE_BYTES;
pub use services::Services;

use crate::egress::EgressPolicy;
use bindings::StepPluginPre;
use bindings::weft::plugin::types as wit;
use http_gate::HttpGate;
use limits::MemoryLimiter;
use sandbox::{LogBook, Sandbox, lock};

/// How often the epoch advances; the granularity of timeouts and of a busy
/// guest yielding its thread back to the scheduler.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Past the attempt's own timeout, how long a host call (an HTTP request, a
/// database read) may keep the attempt alive before it is dropped.
const HOST_CALL_GRACE: Duration = Duration::from_millis(500);

/// Limits for `describe()`: it should return a constant.
const DESCRIBE_LIMITS: Limits = Limits {
    memory_bytes: 64 << 20,
    timeout: Duration::from_secs(5),
    output_bytes: 1 << 20,
    log_bytes: 16 << 10,
};

/// Operator settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are kept across restarts; `None` keeps them
    /// in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Limits an attempt gets when nothing lowers them.
    pub default_limits: Limits,
    /// Limits no plugin, tenant or step may exceed.
    pub ceiling: Limits,
    /// Attempts running at once; further attempts wait for a slot. Sizes the
    /// pooling allocator.
    pub max_concurrent_attempts: u32,
    /// Which addresses plugins' outbound HTTP may connect to, whatever
    /// their grants say. The default refuses every non-public address.
    pub egress: EgressPolicy,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            default_limits: Limits::DEFAULT,
            ceiling: Limits::CEILING,
            max_concurrent_attempts: 64,
            egress: EgressPolicy::default(),
        }
    }
}

/// Identifies the attempt to the plugin (see `step-context` in `wit/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepContext {
    pub tenant: String,
    pub run_id: String,
    pub step_id: String,
    pub attempt: u32,
    pub idempotency_key: String,
}

impl From<&StepContext> for wit::StepContext {
    fn from(c: &StepContext) -> Self {
        Self {
            tenant: c.tenant.clone(),
            run_id: c.run_id.clone(),
            step_id: c.step_id.clone(),
            attempt: c.attempt,
            idempotency_key: c.idempotency_key.clone(),
        }
    }
}

/// What a plugin says about itself, validated: a snake_case name, a semver
/// version and JSON schemas.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: semver::Version,
    pub description: String,
    pub config_schema: serde_json::Value,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub capabilities: Vec<String>,
}

/// A loaded plugin: compiled, linked and described.
pub struct Plugin {
    /// sha256 of the component bytes, hex.
    pub hash: String,
    pub info: PluginInfo,
    /// Imports and exports of the component, by name.
    pub world: cache::ComponentWorld,
    /// Size of the component in bytes.
    pub size: usize,
    /// Whether the compiled code came from the disk cache.
    pub from_disk_cache: bool,
    /// Time spent compiling (or loading from the disk cache).
    pub compile_time: Duration,
    pre: StepPluginPre<Sandbox>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("hash", &self.hash)
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .finish_non_exhaustive()
    }
}

/// One attempt's inputs.
pub struct Invocation<'a> {
    pub context: StepContext,
    pub config: &'a str,
    pub input: &'a str,
    pub grants: Grants,
    pub services: Services,
    /// Lowered to the runtime's ceiling if higher.
    pub limits: Limits,
}

/// A line an attempt logged (through `host.log`, stdout or stderr).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// `trace`..`error` for `host.log`, `stdout` or `stderr` for the streams.
    pub level: &'static str,
    pub message: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What one attempt produced.
#[derive(Debug)]
pub struct Attempt {
    /// The output as JSON text (already checked to parse), or why it failed.
    pub result: Result<String, AttemptError>,
    pub logs: Vec<LogLine>,
    /// Log lines dropped past the log limit.
    pub dropped_log_lines: u64,
    pub duration: Duration,
}

/// The sandboxed component runtime; cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    config: RuntimeConfig,
    /// Loaded plugins by content hash.
    loaded: Mutex<HashMap<String, Arc<Plugin>>>,
    /// One permit per attempt slot of the pooling allocator.
    slots: Arc<Semaphore>,
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let engine = Engine::new(&engine_config(&config)).map_err(LoadError::engine)?;
        let linker = linker(&engine).map_err(LoadError::engine)?;
        start_epoch_ticker(&engine);
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| LoadError::Cache(format!("creating {}: {e}", dir.display())))?;
        }
        Ok(Self {
            slots: Arc::new(Semaphore::new(config.max_concurrent_attempts as usize)),
            engine,
            linker,
            config,
            loaded: Mutex::default(),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Validates, compiles (or fetches from cache) and describes a component.
    #[tracing::instrument(skip_all, fields(size = bytes.len()))]
    pub async fn load(&self, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let hash = cache::content_hash(bytes);
        if let Some(plugin) = lock(&self.loaded).get(&hash) {
            return Ok(plugin.clone());
        }
        cache::check_is_component(bytes)?;
        let started = Instant::now();
        let (component, from_disk_cache) =
            cache::compile(&self.engine, self.config.cache_dir.as_deref(), bytes, &hash).await?;
        let compile_time = started.elapsed();
        let world = cache::ComponentWorld::of(&self.engine, &component);
        world.check_exports()?;
        cache::check_step_types(&self.engine, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = StepPluginPre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let info = self.describe(&pre).await?;
        let plugin = Arc::new(Plugin {
            hash: hash.clone(),
            info,
            world,
            size: bytes.len(),
            from_disk_cache,
            compile_time,
            pre,
        });
        tracing::info!(
            name = %plugin.info.name,
            version = %plugin.info.version,
            %hash,
            from_disk_cache,
            compile_ms = compile_time.as_millis() as u64,
            "plugin loaded"
        );
        lock(&self.loaded).insert(hash, plugin.clone());
        Ok(plugin)
    }

    async fn describe(&self, pre: &StepPluginPre<Sandbox>) -> Result<PluginInfo, LoadError> {
        let log = Arc::new(Mutex::new(LogBook::new(DESCRIBE_LIMITS.log_bytes)));
        let mut store = self.store(
            None,
            Services::in_memory().0,
            Grants::default(),
            DESCRIBE_LIMITS,
            &log,
            None,
        );
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.weft_plugin_step().call_describe(&mut store).await
        };
        let raw = match tokio::time::timeout(DESCRIBE_LIMITS.timeout + HOST_CALL_GRACE, call).await
        {
            Err(_) => {
                return Err(LoadError::Describe(AttemptError::Timeout {
                    limit: DESCRIBE_LIMITS.timeout,
                }));
            }
            Ok(Err(e)) => {
                return Err(LoadError::Describe(classify(
                    e,
                    &store,
                    &log,
                    &DESCRIBE_LIMITS,
                )));
            }
            Ok(Ok(info)) => info,
        };
        validate_info(raw)
    }

    /// Runs one attempt of `plugin`. Never panics and never returns early
    /// because of anything the guest does; dropping the returned future
    /// interrupts the attempt (that is how a run is terminated).
    pub async fn invoke(&self, plugin: &Plugin, invocation: Invocation<'_>) -> Attempt {
        self.invoke_traced(plugin, invocation, None).await
    }

    /// [`Self::invoke`] within a trace: `trace` is the attempt's exported
    /// span, the parent of a span per outbound HTTP request, whose
    /// `traceparent` the request carries.
    #[tracing::instrument(skip_all, fields(plugin = %plugin.info.name, run_id = %invocation.context.run_id, step_id = %invocation.context.step_id, attempt = invocation.context.attempt))]
    pub async fn invoke_traced(
        &self,
        plugin: &Plugin,
        invocation: Invocation<'_>,
        trace: Option<tracing::Span>,
    ) -> Attempt {
        let started = Instant::now();
        // The semaphore is never closed, so acquiring only waits.
        let _slot = self.slots.acquire().await;
        let limits = invocation.limits.within(&self.config.ceiling);
        let log = Arc::new(Mutex::new(LogBook::new(limits.log_bytes)));
        let context = invocation.context;
        let wit_context = wit::StepContext::from(&context);
        let mut store = self.store(
            Some(context),
            invocation.services,
            invocation.grants,
            limits,
            &log,
            trace,
        );
        let call = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            instance
                .weft_plugin_step()
                .call_run(
                    &mut store,
                    &wit_context,
                    invocation.config,
                    invocation.input,
                )
                .await
        };
        let outcome = tokio::time::timeout(limits.timeout + HOST_CALL_GRACE, call).await;
        for output in &store.data().outputs {
            output.flush_partial();
        }
        let result = match outcome {
            Err(_) => Err(AttemptError::Timeout {
                limit: limits.timeout,
            }),
            Ok(Err(trap)) => Err(classify(trap, &store, &log, &limits)),
            Ok(Ok(Err(step_error))) => Err(step_error.into()),
            Ok(Ok(Ok(output))) => check_output(output, &limits),
        };
        drop(store);
        let log = std::mem::replace(&mut *lock(&log), LogBook::new(0));
        let duration = started.elapsed();
        match &result {
            Ok(_) => tracing::debug!(
                duration_us = duration.as_micros() as u64,
                "attempt completed"
            ),
            Err(e) => tracing::info!(kind = e.kind(), error = %e, "attempt failed"),
        }
        Attempt {
            result,
            logs: log.lines,
            dropped_log_lines: log.dropped,
            duration,
        }
    }

    fn store(
        &self,
        context: Option<StepContext>,
        services: Services,
        grants: Grants,
        limits: Limits,
        log: &Arc<Mutex<LogBook>>,
        trace: Option<tracing::Span>,
    ) -> Store<Sandbox> {
        let (wasi, outputs) = sandbox::empty_wasi(log);
        let sandbox = Sandbox {
            wasi,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            table: wasmtime::component::ResourceTable::new(),
            hooks: HttpGate {
                grants: grants.clone(),
                egress: self.config.egress.clone(),
                log: log.clone(),
                trace,
            },
            limiter: MemoryLimiter {
                limit: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                hit: false,
            },
            context,
            services,
            grants,
            log: log.clone(),
            outputs,
            mail_calls: 0,
            notify_calls: 0,
        };
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + limits.timeout;
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(error::DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        store
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let slots = config.max_concurrent_attempts.max(1);
    let mut pool = PoolingAllocationConfig::default();
    // Core instances, memories and tables per component are generous so
    // interpreters compiled to components (Python, JavaScript) fit.
    pool.total_component_instances(slots)
        .total_core_instances(slots * 16)
        .total_memories(slots * 4)
        .total_tables(slots * 16)
        .total_stacks(slots)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(64)
        .max_memory_size(usize::try_from(config.ceiling.memory_bytes).unwrap_or(usize::MAX))
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(4 << 20)
        // Reset the first pages of a reused slot with memset rather than
        // madvise (measured: 1 MiB costs more than it saves).
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10);
    let mut wasm = Config::new();
    wasm.epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .max_wasm_stack(1 << 20)
        .async_stack_size(2 << 20)
        .memory_reservation(1 << 32)
        .memory_guard_size(32 << 20)
        .parallel_compilation(true);
    wasm
}

fn linker(engine: &Engine) -> wasmtime::Result<Linker<Sandbox>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    bindings::weft::plugin::host::add_to_linker::<_, HasSelf<Sandbox>>(&mut linker, |s| s)?;
    bindings::weft::plugin::types::add_to_linker::<_, HasSelf<Sandbox>>(&mut linker, |s| s)?;
    bindings::wasi::keyvalue::store::add_to_linker::<_, HasSelf<Sandbox>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Advances the engine's epoch every tick until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("weft-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!(error = %e, "could not start the epoch ticker; timeouts fall back to the host timer"));
}

/// Names the reason a call into the guest failed.
fn classify(
    error: wasmtime::Error,
    store: &Store<Sandbox>,
    log: &Arc<Mutex<LogBook>>,
    limits: &Limits,
) -> AttemptError {
    if error.downcast_ref::<error::DeadlineExceeded>().is_some() {
        return AttemptError::Timeout {
            limit: limits.timeout,
        };
    }
    if store.data().limiter.hit {
        return AttemptError::MemoryLimit {
            limit: limits.memory_bytes,
        };
    }
    let guest_said = stderr_tail(log);
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => AttemptError::StackOverflow,
        Some(Trap::Interrupt) => AttemptError::Timeout {
            limit: limits.timeout,
        },
        Some(trap) => AttemptError::Trap {
            message: match guest_said {
                Some(said) => format!("{trap}: {said}"),
                None => trap.to_string(),
            },
        },
        None => AttemptError::Trap {
            message: format!("{error:#}"),
        },
    }
}

/// The guest's last stderr lines (a Rust panic message lands there).
fn stderr_tail(log: &Arc<Mutex<LogBook>>) -> Option<String> {
    let book = lock(log);
    let lines: Vec<&str> = book
        .lines
        .iter()
        .filter(|l| l.level == "stderr")
        .map(|l| l.message.as_str())
        .collect();
    if lines.is_empty() {
        return None;
    }
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    Some(tail.chars().take(2000).collect())
}

fn check_output(output: String, limits: &Limits) -> Result<String, AttemptError> {
    if output.len() > limits.output_bytes {
        return Err(AttemptError::OutputTooLarge {
            size: output.len(),
            limit: limits.output_bytes,
        });
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
        return Err(AttemptError::InvalidOutput {
            reason: format!("the output is not JSON: {e}"),
        });
    }
    Ok(output)
}

fn validate_info(raw: wit::PluginInfo) -> Result<PluginInfo, LoadError> {
    let bad = |m: String| Err(LoadError::InvalidInfo(m));
    let name_ok = raw.name.len() <= 64
        && raw.name.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !name_ok {
        return bad(format!(
            "name {:?} must be 1-64 characters of a-z, 0-9, _ or -, starting with a letter",
            raw.name
        ));
    }
    let version = match semver::Version::parse(&raw.version) {
        Ok(v) => v,
        Err(e) => return bad(format!("version {:?} is not semver: {e}", raw.version)),
    };
    let schema = |what: &str, text: &str| -> Result<serde_json::Value, LoadError> {
        if text.trim().is_empty() {
            return Ok(serde_json::json!({}));
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| LoadError::InvalidInfo(format!("{what} is not JSON: {e}")))?;
        if !(value.is_object() || value.is_boolean()) {
            return Err(LoadError::InvalidInfo(format!(
                "{what} must be a JSON Schema object"
            )));
        }
        Ok(value)
    };
    Ok(PluginInfo {
        config_schema: schema("config-schema", &raw.config_schema)?,
        input_schema: schema("input-schema", &raw.input_schema)?,
        output_schema: schema("output-schema", &raw.output_schema)?,
        name: raw.name,
        version,
        description: raw.description,
        capabilities: raw.capabilities,
    })
}
