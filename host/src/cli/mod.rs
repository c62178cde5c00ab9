//! The `weft` command line. `run` is one flat match over the commands.

#![allow(
    clippy::print_stdout,
    reason = "the CLI's output is for people and scripts"
)]

mod build;
mod client;
mod plugin;
mod plugin_client;
mod plugin_oci;
mod scaffold;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::TelemetryError;

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "A workflow host whose step types are sandboxed WebAssembly components"
)]
pub struct Cli {
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP API, scheduler and built-in plugins.
    Serve(Box<serve::ServeArgs>),
    /// Work with plugin components locally, or publish them to a server.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Create, update and publish workflow definitions on a server.
    Workflow(client::WorkflowArgs),
    /// Start, follow and control runs on a server.
    Run(client::RunArgs),
    /// List, remind, reassign and revoke the tasks of paused human steps.
    Task(client::TaskArgs),
    /// Create and list tenants on a server (the operator's key only).
    Tenant(client::TenantArgs),
    /// Create, list and revoke your tenant's API keys (`admin` scope).
    Key(client::KeyArgs),
}

/// Logs go to stderr so stdout stays for command output. `weft serve` with
/// an OTLP endpoint also exports traces: call this inside the tokio runtime
/// and shut the returned guard down once the command is done.
pub fn init_tracing(cli: &Cli) -> Result<Option<crate::telemetry::Guard>, TelemetryError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let default = match cli.verbose {
        0 => "warn",
        1 => "info,weft=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let exporter = match &cli.command {
        Command::Serve(args) => crate::telemetry::init(&args.telemetry())?,
        _ => None,
    };
    let (tracer, guard) = exporter.unzip();
    // Without an endpoint there is no such layer at all.
    let otel = tracer.map(crate::telemetry::layer);
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .try_init();
    Ok(guard)
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Plugin(command) => plugin::run(command).await,
        Command::Workflow(args) => client::workflow_command(args).await,
        Command::Run(args) => client::run_command(args).await,
        Command::Task(args) => client::task_command(args).await,
        Command::Tenant(args) => client::tenant_command(args).await,
        Command::Key(args) => client::key_command(args).await,
    }
}

/// The operator's egress policy: which non-public addresses plugins'
/// outbound HTTP (and, on `weft serve`, webhooks) may connect to.
#[derive(Debug, clap::Args)]
pub(crate) struct EgressArgs {
    /// Let outbound connections (plugins' HTTP, webhooks) reach every
    /// non-public address: loopback, private, link-local, CGNAT and the
    /// rest. Refused by default, so a tenant cannot reach this host's own
    /// network, its services or a cloud metadata endpoint.
    #[arg(long, env = "WEFT_EGRESS_ALLOW_PRIVATE")]
    egress_allow_private: bool,
    /// Non-public address blocks outbound connections may reach, e.g.
    /// `127.0.0.1/32,10.0.0.0/8` (comma-separated or repeated). Public
    /// addresses are always allowed; tenants' grants only narrow this.
    #[arg(
        long,
        env = "WEFT_EGRESS_ALLOW",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    egress_allow: Vec<crate::egress::Cidr>,
}

impl EgressArgs {
    /// The policy; `allow_private` also allows every non-public address
    /// (for a deprecated flag that means the same).
    pub(crate) fn policy(&self, allow_private: bool) -> crate::egress::EgressPolicy {
        crate::egress::EgressPolicy::new(
            self.egress_allow_private || allow_private,
            self.egress_allow.clone(),
        )
    }
}

/// Reads a JSON argument given inline or as `@path`.
pub(crate) fn json_arg(value: &str, what: &str) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context as _;
    let text = match value.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {what} from {path}"))?
        }
        None => value.to_owned(),
    };
    serde_json::from_str(&text).with_context(|| format!("{what} is not valid JSON"))
}
