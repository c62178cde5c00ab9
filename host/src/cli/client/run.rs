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
        /// The run's input: JSON, or `@file.json` (default `{}`; with
        /// --preset, none).
        #[arg(long)]
        input: Option<String>,
        /// What the run is about, `name:value`; repeat for more.
        #[arg(long = "label", value_name = "NAME:VALUE")]
        labels: Vec<String>,
        /// A preset of the workflow whose input goes under --input.
        #[arg(long)]
        preset: Option<String>,
        /// 1 (the default) to 3: the tenant's due steps of a higher
        /// priority are claimed first.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=3))]
        priority: Option<i64>,
        /// Follow the run, printing each step's progress to stderr and the
        /// result to stdout.
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to follow the run before giving up.
        #[arg(long, default_value_t = 600, requires = "wait")]
        timeout_secs: u64,
    },
    /// Lists runs, newest first, one per line: id, status, workflow@version,
    /// created, labels.
    List {
        /// Only this workflow's runs.
        #[arg(long)]
        workflow: Option<String>,
        /// pending, running, paused, completed, failed, cancelled,
        /// terminated or declined.
        #[arg(long)]
        status: Option<String>,
        /// Only runs with this label, `name:value`; repeat for runs with
        /// every one.
        #[arg(long = "label", value_name = "NAME:VALUE")]
        labels: Vec<String>,
        /// At most this many (1-100).
        #[arg(long, default_value_t = 25)]
        limit: u32,
    },
    /// Starts a new run of a finished run's workflow version that keeps the
    /// outputs of the steps before --from-step and runs it and everything
    /// after it again; prints the new run's id and status.
    Rerun {
        /// The finished run's id.
        id: String,
        /// The step to run again, with every step after it.
        #[arg(long)]
        from_step: String,
        /// New input: JSON, or `@file.json` (default: the old run's).
        #[arg(long)]
        input: Option<String>,
    },
    /// Retries every failed run of a workflow (each failed step again);
    /// prints how many, and the runs it could not retry.
    RetryFailed {
        /// The workflow's key.
        #[arg(long)]
        workflow: String,
        /// Only runs that failed at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
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
    /// Pauses the run: no new step starts until `weft run unpause`;
    /// attempts under way finish.
    Pause {
        /// The run's id.
        id: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Unpauses a paused run: its held steps start again.
    Unpause {
        /// The run's id.
        id: String,
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
            labels,
            preset,
            priority,
            wait,
            timeout_secs,
        } => {
            let input = match (input, &preset) {
                (Some(input), _) => json_arg(&input, "--input")?,
                (None, Some(_)) => Value::Null,
                (None, None) => json!({}),
            };
            let mut body = json!({"workflow": workflow, "input": input});
            if let Some(version) = version {
                body["version"] = json!(version);
            }
            if !labels.is_empty() {
                let mut map = serde_json::Map::new();
                for label in &labels {
                    let (name, value) = label.split_once(':').with_context(|| {
                        format!("--label {label:?} must be name:value, e.g. customer:c-42")
                    })?;
                    map.insert(name.to_owned(), json!(value));
                }
                body["labels"] = Value::Object(map);
            }
            if let Some(priority) = priority {
                body["priority"] = json!(priority);
            }
            if let Some(preset) = preset {
                body["preset"] = json!(preset);
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
        RunCommand::List {
            workflow,
            status,
            labels,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(workflow.map(|w| ("workflow", w)));
            query.extend(status.map(|s| ("status", s)));
            query.extend(labels.into_iter().map(|l| ("label", l)));
            let list = client.get_query(&["v1", "runs"], &query).await?;
            for r in list["items"].as_array().into_iter().flatten() {
                let labels: Vec<String> = r["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, value)| format!("{name}:{}", text(value)))
                    .collect();
                println!(
                    "{} {} {}@{} {} {}",
                    text(&r["id"]),
                    text(&r["status"]),
                    text(&r["workflow"]),
                    text(&r["version"]),
                    text(&r["created_at"]),
                    labels.join(",")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RunCommand::Rerun {
            id,
            from_step,
            input,
        } => {
            let mut body = json!({"from_step": from_step});
            if let Some(input) = input {
                body["input"] = json_arg(&input, "--input")?;
            }
            let run = client.post(&["v1", "runs", &id, "rerun"], &body).await?;
            print_status(&run)
        }
        RunCommand::RetryFailed { workflow, since } => {
            let mut body = json!({"workflow": workflow});
            if let Some(since) = since {
                body["since"] = json!(since);
            }
            let done = client.post(&["v1", "runs:retry-failed"], &body).await?;
            println!("retried {}", text(&done["retried"]));
            for skipped in done["not_retried"].as_array().into_iter().flatten() {
                println!(
                    "not retried {}: {}",
                    text(&skipped["run_id"]),
                    text(&skipped["reason"])
                );
            }
            if done["more"] == true {
                println!("more failed runs match: run it again");
            }
            Ok(ExitCode::SUCCESS)
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
        RunCommand::Pause { id, reason } => {
            let body = match reason {
                Some(reason) => json!({"reason": reason}),
                None => json!({}),
            };
            let run = client.post(&["v1", "runs", &id, "pause"], &body).await?;
            print_status(&run)
        }
        RunCommand::Unpause { id } => {
            let run = client
                .post(&["v1", "runs", &id, "unpause"], &json!({}))
                .await?;
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
    let held = if run["held_at"].is_string() {
        " (paused by an operator)"
    } else {
        ""
    };
    if paused_on.is_empty() {
        println!("{id} {status}{held}");
    } else {
        println!("{id} {status}{held} (on {})", paused_on.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON string without its quotes; anything else as JSON.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}
