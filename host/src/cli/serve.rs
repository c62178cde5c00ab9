//! `weft serve`: the server on SQLite (default) or Postgres (several hosts
//! sharing one database), with the built-in plugins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::builtins;
use crate::db::{Db, Options as DbOptions, Synchronous};
use crate::engine::marketplace;
use crate::engine::plugins::Plugins;
use crate::engine::{Engine, EngineConfig};
use crate::mail::SmtpRelay;
use crate::runtime::{Runtime, RuntimeConfig};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WEFT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The base URL people open task links at (`<url>/t/<token>`), e.g.
    /// `https://weft.example.com`; default the address listened on.
    #[arg(long, env = "WEFT_PUBLIC_URL")]
    public_url: Option<String>,
    /// Where the database, compiled-component cache and admin key live.
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "./weft-data")]
    data_dir: PathBuf,
    /// Database URL; default `sqlite://<data-dir>/weft.db`. With
    /// `postgres://user@host/database` several hosts share the work.
    #[arg(long, env = "WEFT_DATABASE_URL")]
    database: Option<String>,
    /// Postgres only: connections this host keeps to the database.
    #[arg(long, env = "WEFT_DB_MAX_CONNECTIONS", default_value_t = 16)]
    db_max_connections: u32,
    /// Extra plugins (`*.wasm`) every tenant can use, like the built-ins.
    #[arg(long, env = "WEFT_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,
    /// SQLite durability: `normal` (survives a killed process; a power loss
    /// may lose the last commits) or `full` (fsync on every commit).
    #[arg(
        long,
        env = "WEFT_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "normal"
    )]
    sqlite_synchronous: Synchronous,
    /// Step attempts this host runs at once.
    #[arg(long, env = "WEFT_MAX_PARALLEL", default_value_t = 32)]
    max_parallel: usize,
    /// Step attempts one tenant may have running at once, across every host;
    /// more wait in the queue (never fail) so one busy tenant cannot hold
    /// every slot. 0: no cap (on Postgres, claims then take no per-tenant
    /// lock).
    #[arg(long, env = "WEFT_TENANT_MAX_RUNNING", default_value_t = 16)]
    tenant_max_running: usize,
    /// Runs one tenant may have waiting to start; a start past it gets 429
    /// with Retry-After instead of a queue that only grows. 0: no limit.
    #[arg(long, env = "WEFT_TENANT_MAX_PENDING", default_value_t = crate::engine::DEFAULT_TENANT_MAX_PENDING)]
    tenant_max_pending: usize,
    /// Deletes finished runs this long after they ended (`90s`, `15m`,
    /// `24h`, `30d`), with their steps, attempts and events, in small
    /// batches. Off by default: runs are kept for ever.
    #[arg(long, env = "WEFT_RETENTION", value_parser = parse_duration)]
    retention: Option<Duration>,
    /// Requests per second one API key may make (bursts to twice that);
    /// over it: 429 with Retry-After.
    #[arg(long, env = "WEFT_RATE_LIMIT_PER_KEY", default_value_t = 100.0)]
    rate_limit_per_key: f64,
    /// Runs one tenant may start per minute; over it: 429 with Retry-After.
    #[arg(long, env = "WEFT_RUNS_PER_MINUTE", default_value_t = 1200.0)]
    runs_per_minute: f64,
    /// How long a claimed step stays leased without renewal, in ms.
    #[arg(long, env = "WEFT_LEASE_MS", default_value_t = 15_000)]
    lease_ms: u64,
    /// SMTP relay for the mail outbox (`smtp://host:25`, `smtps://user:pass@host`).
    #[arg(long, env = "WEFT_SMTP_URL")]
    smtp_url: Option<String>,
    /// Sender address for outbox mail.
    #[arg(long, env = "WEFT_MAIL_FROM", default_value = "weft@localhost")]
    mail_from: String,
    /// First wait before sending an outbox message again after a transient
    /// SMTP failure, in ms; each later wait doubles, up to
    /// `--mail-retry-max-ms`, within ±20 % jitter.
    #[arg(long, env = "WEFT_MAIL_RETRY_BASE_MS", default_value_t = 30_000)]
    mail_retry_base_ms: u64,
    /// Longest wait between two attempts at an outbox message, in ms.
    #[arg(long, env = "WEFT_MAIL_RETRY_MAX_MS", default_value_t = 3_600_000)]
    mail_retry_max_ms: u64,
    /// Attempts at an outbox message before it is marked `failed` (31, with
    /// the default waits, span about 24 hours).
    #[arg(long, env = "WEFT_MAIL_MAX_ATTEMPTS", default_value_t = 31)]
    mail_max_attempts: u32,
    /// Key that seals tenant secrets at rest: 64 hex characters. Default: a
    /// random key kept in `<data-dir>/secrets.key` (back it up with the
    /// database: secrets cannot be read without it).
    #[arg(long, env = "WEFT_SECRETS_KEY", hide_env_values = true)]
    secrets_key: Option<String>,
    /// Largest plugin component (`POST /v1/plugins`) a tenant may upload,
    /// in bytes; larger uploads get `413`.
    #[arg(long, env = "WEFT_MAX_UPLOAD_BYTES", default_value_t = crate::engine::DEFAULT_MAX_UPLOAD_BYTES)]
    max_upload_bytes: usize,
    /// Bytes of uploaded plugins one tenant may store; over it: 413.
    #[arg(long, env = "WEFT_TENANT_PLUGIN_STORAGE_BYTES", default_value_t = 256 << 20)]
    tenant_plugin_storage_bytes: usize,
    /// Start the schedule clock at this time (RFC 3339) instead of now; it
    /// then advances in real time. For trying out and testing schedules
    /// without waiting for their tick; leave unset in production.
    #[arg(long, env = "WEFT_CLOCK_START")]
    clock_start: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// First delay before redelivering a failed webhook, in ms; each retry
    /// waits longer (see the README for the schedule).
    #[arg(long, env = "WEFT_WEBHOOK_RETRY_BASE_MS", default_value_t = crate::engine::webhooks::DEFAULT_RETRY_BASE_MS)]
    webhook_retry_base_ms: u64,
    /// A webhook subscription is disabled after this many consecutive
    /// failed delivery attempts.
    #[arg(long, env = "WEFT_WEBHOOK_DISABLE_AFTER", default_value_t = crate::engine::webhooks::DEFAULT_DISABLE_AFTER)]
    webhook_disable_after: u32,
    #[command(flatten)]
    egress: super::EgressArgs,
    /// Deprecated: the same as --egress-allow-private, which now covers
    /// plugins' outbound HTTP as well as webhooks.
    #[arg(long, env = "WEFT_WEBHOOK_ALLOW_PRIVATE_NETWORKS")]
    webhook_allow_private_networks: bool,
    /// Queue webhook deliveries but do not send them (maintenance; they go
    /// out once a host runs without this flag).
    #[arg(long, env = "WEFT_HOLD_WEBHOOKS")]
    hold_webhooks: bool,
    /// HTTP connections served at once; past it a client gets `503` with
    /// Retry-After. Also capped by the open-file limit, which `weft serve`
    /// raises to its hard limit.
    #[arg(long, env = "WEFT_MAX_CONNECTIONS", default_value_t = api::server::Limits::default().max_connections)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers, counted from a new
    /// connection or from the previous answer on a kept-alive one (so an
    /// idle HTTP/1.1 connection is closed after this long).
    #[arg(long, env = "WEFT_HEADER_TIMEOUT_SECS", default_value_t = api::server::Limits::default().header_read_timeout.as_secs())]
    header_timeout_secs: u64,
    /// Seconds a connection may sit with no request in flight and no bytes
    /// moving before it is closed.
    #[arg(long, env = "WEFT_IDLE_TIMEOUT_SECS", default_value_t = api::server::Limits::default().idle_timeout.as_secs())]
    idle_timeout_secs: u64,
    /// Longest lifetime a JWT may have: tokens whose `exp − iat` (or
    /// `exp − now`, without `iat`) exceeds it are refused. A number with
    /// `s`, `m`, `h` or `d`.
    #[arg(long, env = "WEFT_JWT_MAX_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    jwt_max_lifetime: Duration,
    /// Export traces over OTLP/HTTP (protobuf) to this receiver's base URL,
    /// e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended). Also on
    /// with the standard `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is); headers from
    /// `OTEL_EXPORTER_OTLP_HEADERS`, the service name from
    /// `OTEL_SERVICE_NAME` (default `weft`). Off when none is set. Spans:
    /// `run`, `step.attempt`, `http.client.request` (a plugin's outbound
    /// request, which carries the attempt's `traceparent`) and sampled
    /// `db.transaction`; see the README.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Share of the scheduler's database transactions (claims, recording
    /// results) given a `db.transaction` span when traces are exported,
    /// from 0 (none) to 1 (all).
    #[arg(long, env = "WEFT_OTLP_DB_SAMPLE_RATIO", default_value_t = crate::telemetry::DEFAULT_DB_SAMPLE_RATIO)]
    otlp_db_sample_ratio: f64,
    /// OCI registries (`host` or `host:port`, comma-separated) from which
    /// `POST /v1/plugins {"oci": "host/ns/name:tag"}` may pull plugins.
    /// None by default. Credentials come from the Docker config file
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, `auths`);
    /// without an entry the registry is used anonymously.
    #[arg(
        long,
        env = "WEFT_OCI_ALLOW",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    oci_allow: Vec<String>,
    /// Registries reached over plain HTTP instead of HTTPS
    /// (comma-separated). Loopback registries (`localhost`, `127.0.0.1`,
    /// `[::1]`) always are; use this only for a registry on a trusted
    /// network.
    #[arg(
        long,
        env = "WEFT_OCI_PLAIN_HTTP",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    oci_plain_http: Vec<String>,
    /// Shut down when standard input closes (for supervisors and tests that
    /// must not leave a server behind).
    #[arg(long, env = "WEFT_STOP_ON_STDIN_EOF")]
    stop_on_stdin_eof: bool,
}

impl ServeArgs {
    /// What was asked of the trace exporter.
    pub(crate) fn telemetry(&self) -> crate::telemetry::Config {
        crate::telemetry::Config {
            endpoint: self.otlp_endpoint.clone(),
            db_sample_ratio: self.otlp_db_sample_ratio,
        }
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let url = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("weft.db").display()));
    // SQLite serves one host: a lock file next to the database keeps a
    // second `weft serve` off it, which also makes it safe to take over the
    // leases a killed predecessor left behind at once.
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let _lock = if postgres {
        None
    } else {
        Some(lock_database(&url)?)
    };
    let db = Db::open(
        &url,
        DbOptions {
            synchronous: args.sqlite_synchronous,
            max_connections: args.db_max_connections,
        },
    )
    .await
    .with_context(|| format!("opening {}", redact(&url)))?;
    let released = db.release_leases().await?;
    if released > 0 {
        tracing::info!(
            released,
            "steps left running by a stopped host will be retried now"
        );
    }

    // Key files are the owner's alone, also those an older version wrote
    // readable by others.
    for name in [ADMIN_KEY_FILE, SECRETS_KEY_FILE] {
        restrict_to_owner(&args.data_dir.join(name))?;
    }
    let pinned = std::env::var("WEFT_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    if let Some(key) = api::auth::bootstrap(&db, pinned.as_deref()).await? {
        let path = args.data_dir.join(ADMIN_KEY_FILE);
        write_key_file(&path, &format!("{key}\n"))?;
        if pinned.is_none() {
            println!(
                "admin API key (shown once, also written to {}):\n  {key}",
                path.display()
            );
        }
    }

    if args.webhook_allow_private_networks {
        tracing::warn!(
            "--webhook-allow-private-networks is deprecated: it now means --egress-allow-private, which lets plugins' outbound HTTP reach non-public addresses too"
        );
    }
    let egress = args.egress.policy(args.webhook_allow_private_networks);
    tracing::info!(allowed = %egress, "outbound connections may reach");
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(args.data_dir.join("cache")),
        egress,
        max_concurrent_attempts: u32::try_from(args.max_parallel.max(1) * 2).unwrap_or(64),
        ..RuntimeConfig::default()
    })?);
    let plugins = Plugins::default();
    for (name, bytes) in builtins::BUILTINS {
        plugins
            .add_shared(&runtime, bytes)
            .await
            .with_context(|| format!("loading built-in plugin {name}"))?;
    }
    if let Some(dir) = &args.plugin_dir {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            match plugins.add_shared(&runtime, &bytes).await {
                Ok(p) => {
                    tracing::info!(path = %path.display(), name = %p.info.name, version = %p.info.version, "plugin added")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a file that is not a step plugin")
                }
            }
        }
    }
    let stored = marketplace::load_stored(&db, &runtime, &plugins)
        .await
        .context("loading uploaded plugins")?;
    tracing::info!(plugins = stored, "uploaded plugins loaded");
    let secrets = match &args.secrets_key {
        Some(hex) => crate::engine::secrets::SecretBox::from_hex(hex)?,
        None => {
            if postgres {
                tracing::warn!(
                    "no --secrets-key: secrets are sealed with {}; every host sharing this database needs the same key",
                    args.data_dir.join(SECRETS_KEY_FILE).display()
                );
            }
            crate::engine::secrets::SecretBox::load_or_create(
                &args.data_dir.join(SECRETS_KEY_FILE),
            )?
        }
    };
    let smtp = args
        .smtp_url
        .as_deref()
        .map(|u| SmtpRelay::new(u, &args.mail_from))
        .transpose()?;
    // Bound before the engine is made: task links default to the address
    // actually bound (`--listen 127.0.0.1:0` picks a port).
    let listener =
        api::server::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let public_url = match &args.public_url {
        Some(url) => check_public_url(url)?,
        None => {
            let shown = if local.ip().is_unspecified() {
                std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
            } else {
                local
            };
            if local.ip().is_unspecified() || !local.ip().is_loopback() {
                tracing::warn!(
                    "no --public-url: task links point at http://{shown}; set --public-url to the address people reach this host at"
                );
            }
            format!("http://{shown}")
        }
    };
    let engine = Engine::new(
        db,
        runtime,
        plugins,
        EngineConfig {
            max_parallel: args.max_parallel.max(1),
            tenant_max_running: match args.tenant_max_running {
                0 => usize::MAX,
                n => n,
            },
            tenant_max_pending: match args.tenant_max_pending {
                0 => usize::MAX,
                n => n,
            },
            retention: args.retention.filter(|r| !r.is_zero()),
            lease: Duration::from_millis(args.lease_ms.max(1_000)),
            smtp,
            mail_retry: crate::mail::MailRetry {
                base: Duration::from_millis(args.mail_retry_base_ms.max(1)),
                cap: Duration::from_millis(args.mail_retry_max_ms.max(args.mail_retry_base_ms)),
                max_attempts: args.mail_max_attempts.max(1),
            },
            max_upload_bytes: args.max_upload_bytes.max(1),
            tenant_plugin_storage_bytes: args.tenant_plugin_storage_bytes,
            secrets: Some(Arc::new(secrets)),
            clock_offset_ms: args
                .clock_start
                .map_or(0, |t| t.timestamp_millis() - crate::db::now_ms()),
            webhooks: crate::engine::webhooks::WebhookConfig {
                retry_base: Duration::from_millis(args.webhook_retry_base_ms.max(1)),
                disable_after: args.webhook_disable_after.max(1),
                hold: args.hold_webhooks,
            },
            oci: crate::engine::OciConfig {
                allow: args.oci_allow.clone(),
                registries: crate::oci::RegistryOptions {
                    plain_http: args.oci_plain_http.clone(),
                },
            },
            public_url,
            ..EngineConfig::default()
        },
    );
    let shutdown = CancellationToken::new();
    engine.start(shutdown.clone());

    let limits = connection_limits(&args);
    println!("weft listening on http://{local}");
    if args.stop_on_stdin_eof {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
            stop.cancel();
        });
    }
    let stop = shutdown.clone();
    let signal = async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
            () = stop.cancelled() => {}
        }
        stop.cancel();
    };
    api::serve(
        listener,
        AppState::new(
            engine,
            api::limits::RateLimits {
                requests_per_second: args.rate_limit_per_key.max(0.1),
                runs_per_minute: args.runs_per_minute.max(1.0),
            },
        )
        .with_jwt_max_lifetime(args.jwt_max_lifetime),
        limits,
        signal,
    )
    .await?;
    shutdown.cancel();
    Ok(ExitCode::SUCCESS)
}

/// A `--public-url`: http or https, a host, no query or fragment; returned
/// without a trailing slash.
fn check_public_url(text: &str) -> anyhow::Result<String> {
    let uri: axum::http::Uri = text
        .parse()
        .with_context(|| format!("--public-url {text:?} is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        anyhow::bail!("--public-url {text:?} must be an http or https URL with a host");
    }
    if uri.query().is_some() || text.contains('#') {
        anyhow::bail!("--public-url {text:?} must not have a query or fragment");
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// The connection limits from the flags, the count capped by the number of
/// files this process may open (raised to the hard limit first), less room
/// for the database, the cache and outbound connections.
fn connection_limits(args: &ServeArgs) -> api::server::Limits {
    const RESERVED_FILES: u64 = 512;
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let by_files =
        usize::try_from(files.saturating_sub(RESERVED_FILES).max(64)).unwrap_or(usize::MAX);
    if args.max_connections > by_files {
        tracing::warn!(
            max_connections = args.max_connections,
            open_file_limit = files,
            "serving at most {by_files} connections: the open-file limit allows no more"
        );
    }
    api::server::Limits {
        max_connections: args.max_connections.clamp(1, by_files),
        header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
        ..api::server::Limits::default()
    }
}

/// `90s`, `15m`, `24h`, `7d` (or plain seconds) as a duration.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration like 90s, 15m, 24h or 7d"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

/// The operator key's file in the data directory (written on first start).
const ADMIN_KEY_FILE: &str = "admin-key";
/// The key sealing tenant secrets, when `--secrets-key` is not given.
const SECRETS_KEY_FILE: &str = "secrets.key";

/// Writes a file only its owner may read or write (mode 0600).
fn write_key_file(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    restrict_to_owner(path)?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes an existing file readable and writable by its owner only.
fn restrict_to_owner(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} owner-only", path.display()))
        }
        _ => Ok(()),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Takes an exclusive lock on `<database>.lock`; fails if another process
/// holds it.
fn lock_database(url: &str) -> anyhow::Result<std::fs::File> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .with_context(|| {
            format!("unsupported database URL {url:?}: use sqlite://path or postgres://…")
        })?;
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let lock_path = format!("{path}.lock");
    let file =
        std::fs::File::create(&lock_path).with_context(|| format!("creating {lock_path}"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another weft serve is using {path} (it holds {lock_path}); SQLite serves one host"
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {lock_path}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn durations_take_a_unit_of_seconds_minutes_hours_or_days() {
        let cases = [
            ("24h", Some(86_400)),
            ("90s", Some(90)),
            ("15m", Some(900)),
            ("7d", Some(604_800)),
            ("3600", Some(3600)),
            ("1.5h", None),
            ("h", None),
            ("10w", None),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                parse_duration(text).ok(),
                seconds.map(Duration::from_secs),
                "{text}"
            );
        }
    }
}
