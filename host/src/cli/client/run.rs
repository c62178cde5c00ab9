//! `weft run …`: start, read and control runs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{Client, Connection, pretty, watch};
use crate::cli::json_arg;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: RunCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RunCommand {
    /// Starts a run; prints its id and status, or with --wait follows it.
    ///
    /// Exit codes with --wait: 0 completed, 1 failed, terminated, cancelled
    /// or declined, 2 paused (waiting for `weft run resume`), 3 still
    /// running when --timeout-secs ran out.
    Start {
        /// The workflow's key.
        workflow: String,
        /// The version to run (default: the published one).
        #[arg(long)]
        version: Option<String>,
        /// The run's input: JSON, or `@file.json`.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Follow the run, printing each step's progress to stderr and the
        /// result to stdout.
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to follow the run before giving up.
        #[arg(long, default_value_t = 600, requires = "wait")]
        timeout_secs: u64,
    },
    /// Prints the whole run as JSON: status, steps, attempts, result.
    Get {
        /// The run's id.
        id: String,
    },
    /// Resumes a paused step with --data or --action, completes a failed
    /// one by hand with --override-output, or (with none of them) retries
    /// the failed step.
    Resume {
        /// The run's id.
        id: String,
        /// The step to resume.
        #[arg(long)]
        step: String,
        /// Input for a `collect_inputs` step: JSON, or `@file.json`.
        #[arg(long, conflicts_with_all = ["action", "override_output"])]
        data: Option<String>,
        /// The action chosen at a `request_user_action` step.
        #[arg(long, conflicts_with = "override_output")]
        action: Option<String>,
        /// The output to record for the step: JSON, or `@file.json`.
        #[arg(long)]
        override_output: Option<String>,
    },
    /// Stops scheduling new steps; attempts under way finish.
    Cancel {
        /// The run's id.
        id: String,
    },
    /// Stops the run at once, interrupting attempts under way.
    Terminate {
        /// The run's id.
        id: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.connection)?;
    match args.command {
        RunCommand::Start {
            workflow,
            version,
            input,
            wait,
            timeout_secs,
        } => {
            let mut body = json!({"workflow": workflow, "input": json_arg(&input, "--input")?});
            if let Some(version) = version {
                body["version"] = json!(version);
            }
            let run = client.post(&["v1", "runs"], &body).await?;
            let id = run_id(&run)?;
            if !wait {
                println!("{id} {}", text(&run["status"]));
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "run {id} started ({workflow} {})",
                run["version"].as_str().unwrap_or("?")
            );
            watch::follow(&client, id, Duration::from_secs(timeout_secs)).await
        }
        RunCommand::Get { id } => {
            let run = client.get(&["v1", "runs", &id]).await?;
            println!("{}", pretty(&run));
            Ok(ExitCode::SUCCESS)
        }
        RunCommand::Resume {
            id,
            step,
            data,
            action,
            override_output,
        } => {
            let mut body = json!({"step_id": step});
            if let Some(data) = data {
                body["data"] = json_arg(&data, "--data")?;
            }
            if let Some(action) = action {
                body["action"] = json!(action);
            }
            if let Some(output) = override_output {
                body["override_output"] = json_arg(&output, "--override-output")?;
            }
            let run = client.post(&["v1", "runs", &id, "resume"], &body).await?;
            print_status(&run)
        }
        RunCommand::Cancel { id } => {
            let run = client
                .post(&["v1", "runs", &id, "cancel"], &json!({}))
                .await?;
            print_status(&run)
        }
        RunCommand::Terminate { id, reason } => {
            let body = match reason {
                Some(reason) => json!({"reason": reason}),
                None => json!({}),
            };
            let run = client
                .post(&["v1", "runs", &id, "terminate"], &body)
                .await?;
            print_status(&run)
        }
    }
}

fn run_id(run: &Value) -> anyhow::Result<&str> {
    run["id"]
        .as_str()
        .with_context(|| format!("the server's answer has no run id: {run}"))
}

/// `<id> <status>`, plus the steps it waits on when paused.
fn print_status(run: &Value) -> anyhow::Result<ExitCode> {
    let id = run_id(run)?;
    let status = text(&run["status"]);
    let paused_on: Vec<&str> = run["paused_on"]
        .as_array()
        .map(|steps| steps.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if paused_on.is_empty() {
        println!("{id} {status}");
    } else {
        println!("{id} {status} (on {})", paused_on.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON string without its quotes; anything else as JSON.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}
