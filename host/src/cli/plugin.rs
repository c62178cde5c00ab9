//! `weft plugin run` and `weft plugin inspect`: the plugin author's local
//! loop, with in-memory key-value store, outbox, files and secrets.
//! `new` scaffolds a project (see [`super::scaffold`]).
//! `push`, `list` and `grant` talk to a server (see [`super::plugin_client`]);
//! `push oci://…` and `pull` to an OCI registry (see [`super::plugin_oci`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;

use super::json_arg;
use super::plugin_client::{self, GrantArgs, ListArgs, PushArgs};
use crate::builtins;
use crate::runtime::services::MemoryServices;
use crate::runtime::{Grants, Invocation, Limits, Runtime, RuntimeConfig, StepContext};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project (template, SDK and WIT) that builds with one
    /// command.
    New(super::scaffold::NewArgs),
    /// Build a plugin project (Rust, Python, JavaScript, C or Go) into a
    /// component with one command, and check the host would load it.
    Build(super::build::BuildArgs),
    /// Run one attempt of a component outside any workflow and print its
    /// output or its typed error; then the key-value store and outbox.
    Run(Box<RunArgs>),
    /// Print what a component's describe() returns and the world it targets.
    Inspect {
        /// A `.wasm` component, or the name of a built-in plugin.
        component: String,
    },
    /// Upload a component to a server as this tenant's plugin
    /// (`push FILE`), or push it to an OCI registry
    /// (`push oci://host/namespace/name:version FILE`).
    Push(PushArgs),
    /// Download a component from an OCI registry
    /// (`pull oci://host/namespace/name:tag|@sha256:… [-o FILE]`).
    Pull(super::plugin_oci::PullArgs),
    /// List the plugins this tenant can use on a server.
    List(ListArgs),
    /// Set what a plugin may use in this tenant (replaces earlier grants).
    Grant(GrantArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A `.wasm` component, or the name of a built-in plugin.
    component: String,
    /// The step config: JSON, or @file.json.
    #[arg(long, default_value = "{}")]
    config: String,
    /// The step input: JSON, or @file.json.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Key-value entries to start with: a JSON object of key to value
    /// (values that are not strings are stored as JSON), or @file.json.
    #[arg(long)]
    kv: Option<String>,
    /// A file the plugin may read, as ID=PATH (repeatable).
    #[arg(long = "file", value_name = "ID=PATH")]
    files: Vec<String>,
    /// A secret, as NAME=VALUE (repeatable).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secrets: Vec<String>,
    /// Hosts outbound HTTP may reach (repeatable); default: none, unless
    /// --allow-all-hosts.
    #[arg(long = "allow-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Let outbound HTTP reach any host.
    #[arg(long)]
    allow_all_hosts: bool,
    #[command(flatten)]
    egress: super::EgressArgs,
    /// Wall-time limit of the attempt.
    #[arg(long, default_value_t = Limits::DEFAULT.timeout.as_millis() as u64)]
    timeout_ms: u64,
    /// Memory limit of the attempt.
    #[arg(long, default_value_t = Limits::DEFAULT.memory_bytes >> 20)]
    memory_mib: u64,
    /// Output only the step's output JSON (no logs or outbox).
    #[arg(long)]
    quiet: bool,
    /// Deliver the outbox through this SMTP relay after the attempt
    /// (`smtp://host:25`, `smtp://user:pass@host:587?tls=required`,
    /// `smtps://user:pass@host:465`).
    #[arg(long, env = "WEFT_SMTP_URL")]
    smtp_url: Option<String>,
    /// Sender address for delivered mail.
    #[arg(long, env = "WEFT_MAIL_FROM", default_value = "weft@localhost")]
    mail_from: String,
}

fn read_component(component: &str) -> anyhow::Result<Vec<u8>> {
    let path = PathBuf::from(component);
    if path.exists() {
        return std::fs::read(&path).with_context(|| format!("reading {}", path.display()));
    }
    match builtins::get(component) {
        Some(bytes) => Ok(bytes.to_vec()),
        None => bail!(
            "{component} is neither a file nor a built-in plugin (built-ins: {})",
            builtins::BUILTINS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn pair(value: &str, what: &str) -> anyhow::Result<(String, String)> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .with_context(|| format!("{what} {value:?} must look like NAME=VALUE"))
}

pub async fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::New(args) => super::scaffold::new(args),
        PluginCommand::Build(args) => super::build::build(args).await,
        PluginCommand::Inspect { component } => inspect(&component).await,
        PluginCommand::Run(args) => run_attempt(*args).await,
        PluginCommand::Push(args) => plugin_client::push(args).await,
        PluginCommand::Pull(args) => super::plugin_oci::pull(args).await,
        PluginCommand::List(args) => plugin_client::list(args).await,
        PluginCommand::Grant(args) => plugin_client::grant(args).await,
    }
}

async fn inspect(component: &str) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let bytes = read_component(component)?;
    let plugin = runtime.load(&bytes).await?;
    let report = json!({
        "name": plugin.info.name,
        "version": plugin.info.version.to_string(),
        "description": plugin.info.description,
        "capabilities": plugin.info.capabilities,
        "config_schema": plugin.info.config_schema,
        "input_schema": plugin.info.input_schema,
        "output_schema": plugin.info.output_schema,
        "world": {
            "name": "weft:plugin/step-plugin",
            "imports": plugin.world.imports,
            "exports": plugin.world.exports,
        },
        "size_bytes": plugin.size,
        "sha256": plugin.hash,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

async fn run_attempt(args: RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(RuntimeConfig {
        egress: args.egress.policy(false),
        ..RuntimeConfig::default()
    })?;
    let RunArgs {
        component,
        config,
        input,
        kv,
        files,
        secrets,
        allowed_hosts,
        allow_all_hosts,
        egress: _,
        timeout_ms,
        memory_mib,
        quiet,
        smtp_url,
        mail_from,
    } = args;
    let relay = smtp_url
        .map(|url| crate::mail::SmtpRelay::new(&url, &mail_from))
        .transpose()?;
    let bytes = read_component(&component)?;
    let config = json_arg(&config, "--config")?;
    let input = json_arg(&input, "--input")?;
    let memory = MemoryServices::default();
    if let Some(kv) = kv {
        let entries = json_arg(&kv, "--kv")?;
        let entries = entries
            .as_object()
            .context("--kv must be a JSON object of key to value")?;
        let mut store = memory
            .kv
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, value) in entries {
            let bytes = match value {
                serde_json::Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            store.insert(("default".into(), key.clone()), bytes);
        }
    }
    for file in files {
        let (id, path) = pair(&file, "--file")?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
        memory
            .files
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, bytes);
    }
    for secret in secrets {
        let (name, value) = pair(&secret, "--secret")?;
        memory
            .secrets
            .values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, value);
    }
    let plugin = runtime.load(&bytes).await?;
    let mut grants = Grants::all();
    grants.allowed_hosts = if allow_all_hosts {
        vec!["*".into()]
    } else {
        allowed_hosts
    };
    let run_id = uuid::Uuid::now_v7().to_string();
    let limits = Limits {
        timeout: Duration::from_millis(timeout_ms),
        memory_bytes: memory_mib << 20,
        ..Limits::DEFAULT
    };
    let attempt = runtime
        .invoke(
            &plugin,
            Invocation {
                context: StepContext {
                    tenant: "local".into(),
                    idempotency_key: format!("{run_id}/step"),
                    run_id,
                    step_id: "step".into(),
                    attempt: 1,
                },
                config: &config.to_string(),
                input: &input.to_string(),
                grants,
                services: memory.services(),
                limits,
            },
        )
        .await;
    if !quiet {
        for line in &attempt.logs {
            eprintln!("[{}] {}", line.level, line.message);
        }
        if attempt.dropped_log_lines > 0 {
            eprintln!(
                "[weft] {} log lines dropped over the log limit",
                attempt.dropped_log_lines
            );
        }
        for (percent, note) in memory
            .progress
            .reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            eprintln!("[progress] {percent}% {note}");
        }
    }
    let code = match &attempt.result {
        Ok(output) => {
            let value: serde_json::Value = serde_json::from_str(output)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error ({}): {error}", error.kind());
            ExitCode::FAILURE
        }
    };
    if !quiet {
        eprintln!(
            "[weft] attempt took {:.1} ms",
            attempt.duration.as_secs_f64() * 1e3
        );
        print_state(&memory);
    }
    if let Some(relay) = relay {
        let messages = memory
            .outbox
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (_, id, mail) in messages {
            match relay.deliver(&id, &mail).await {
                Ok(()) => eprintln!("[smtp] delivered {id}"),
                Err(e) => {
                    eprintln!("[smtp] {id} not delivered: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(code)
}

fn print_state(memory: &MemoryServices) {
    let kv = memory
        .kv
        .entries
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    eprintln!("--- key-value store ({} entries)", kv.len());
    for ((bucket, key), value) in kv.iter() {
        eprintln!("{bucket}/{key} = {}", String::from_utf8_lossy(value));
    }
    let notifications = memory
        .notifications
        .items
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !notifications.is_empty() {
        eprintln!("--- notifications ({})", notifications.len());
        for (key, id, n) in notifications.iter() {
            eprintln!("{id} (key {key}) [{}] {}: {}", n.level, n.title, n.body);
        }
    }
    drop(notifications);
    let outbox = memory
        .outbox
        .messages
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    eprintln!("--- outbox ({} messages)", outbox.len());
    for (key, id, mail) in outbox.iter() {
        eprintln!(
            "{id} (key {key}) to {:?} cc {:?}: {}\n{}",
            mail.to, mail.cc, mail.subject, mail.body
        );
    }
}
