//! Following a run until it settles: step progress to stderr as it
//! happens, the result to stdout, the outcome as the exit code.
//!
//! The run's event log (`GET /v1/runs/{id}/events?cursor=`) says what
//! happened, so no retry or quick step is missed between polls; a snapshot
//! of the run (`GET /v1/runs/{id}`) says whether it has settled.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ApiProblem, Client, pretty};

/// Time between polls.
const POLL: Duration = Duration::from_millis(250);
/// Failed polls in a row (server restarting, network) before giving up.
const MAX_POLL_FAILURES: u32 = 20;

/// Exit code of a run that paused for input or a decision.
const EXIT_PAUSED: u8 = 2;
/// Exit code when the timeout ran out while the run went on.
const EXIT_TIMEOUT: u8 = 3;

/// Follows run `id` until it ends or pauses, or `timeout` passes.
pub async fn follow(client: &Client, id: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::default();
    let mut failures = 0;
    loop {
        match progress.poll(client, id).await {
            Ok(run) if settled(&run) => {
                // Events written with the final state, if the snapshot beat them.
                progress.catch_up(client, id).await?;
                return report(client, &run).await;
            }
            Ok(run) => {
                failures = 0;
                if Instant::now() >= deadline {
                    eprintln!(
                        "run {id} is still {} after {} s; follow it with: weft run get {id}",
                        run["status"].as_str().unwrap_or("running"),
                        timeout.as_secs()
                    );
                    return Ok(ExitCode::from(EXIT_TIMEOUT));
                }
            }
            // A problem document is an answer (gone, no permission): stop.
            Err(e) if e.is::<ApiProblem>() => return Err(e),
            Err(e) => {
                failures += 1;
                if failures >= MAX_POLL_FAILURES || Instant::now() >= deadline {
                    return Err(e);
                }
                if failures == 1 {
                    eprintln!("warning: {e:#}; retrying");
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn settled(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("completed" | "failed" | "cancelled" | "terminated" | "declined" | "paused")
    )
}

/// What has been printed so far.
#[derive(Default)]
struct Progress {
    /// The last event printed; the next poll asks for later ones.
    cursor: Option<i64>,
    /// Steps that ended (until they start again): progress reports that
    /// arrive after the end are old news.
    ended: HashSet<String>,
}

impl Progress {
    /// Prints new events, then takes a snapshot of the run. Events first:
    /// a settled snapshot is then followed by one last `catch_up`.
    async fn poll(&mut self, client: &Client, id: &str) -> anyhow::Result<Value> {
        self.catch_up(client, id).await?;
        client.get(&["v1", "runs", id]).await
    }

    /// Prints every event after the cursor.
    async fn catch_up(&mut self, client: &Client, id: &str) -> anyhow::Result<()> {
        loop {
            let mut query = vec![("limit", "100".to_owned())];
            if let Some(cursor) = self.cursor {
                query.push(("cursor", cursor.to_string()));
            }
            let page = client
                .get_query(&["v1", "runs", id, "events"], &query)
                .await?;
            for event in page["items"].as_array().into_iter().flatten() {
                if let Some(event_id) = event["id"].as_i64() {
                    self.cursor = Some(event_id);
                }
                if self.is_news(event)
                    && let Some(line) = describe(event)
                {
                    eprintln!("{line}");
                }
            }
            if page["next_cursor"].is_null() {
                return Ok(());
            }
        }
    }

    /// Tracks which steps ended; false for a progress report after the end.
    fn is_news(&mut self, event: &Value) -> bool {
        let Some(step) = event["step_id"].as_str() else {
            return true;
        };
        match event["type"].as_str().unwrap_or("") {
            "step.completed" | "step.failed" | "step.skipped" | "step.cancelled" => {
                self.ended.insert(step.to_owned());
                true
            }
            "step.started" | "step.retrying" => {
                self.ended.remove(step);
                true
            }
            "step.progress" => !self.ended.contains(step),
            _ => true,
        }
    }
}

/// One line for a step event; run events are summed up at the end instead.
fn describe(event: &Value) -> Option<String> {
    let kind = event["type"].as_str()?;
    let step = event["step_id"].as_str()?;
    let data = &event["data"];
    let line = match kind {
        "step.completed" => {
            let how = if let Some(ms) = data["duration_ms"].as_i64() {
                format!(" ({ms} ms)")
            } else if let Some(action) = data["action"].as_str() {
                format!(" (action {action})")
            } else if data["overridden"] == true {
                " (output set by hand)".to_owned()
            } else if data["resumed"] == true {
                " (data received)".to_owned()
            } else {
                String::new()
            };
            format!("✓ {step} completed{how}")
        }
        "step.retrying" if data["manual"] == true => format!("↻ {step} retrying (by request)"),
        "step.retrying" => format!(
            "↻ {step} retrying (attempt {}: {})",
            data["attempt"].as_i64().unwrap_or(0),
            error_text(&data["error"])
        ),
        "step.started" => match data["attempt"].as_i64() {
            Some(attempt) if attempt > 1 => format!("▸ {step} running (attempt {attempt})"),
            _ => format!("▸ {step} running"),
        },
        "step.progress" => {
            let percent = data["percent"]
                .as_u64()
                .map(|p| format!(" {p}%"))
                .unwrap_or_default();
            let note = data["note"]
                .as_str()
                .map(|n| format!(" {n}"))
                .unwrap_or_default();
            format!("… {step}{percent}{note}")
        }
        "step.failed" => format!("✗ {step} failed: {}", error_text(data)),
        "step.paused" => format!(
            "⏸ {step} paused ({})",
            data["kind"].as_str().unwrap_or("waiting")
        ),
        "step.skipped" => match data["reason"].as_str() {
            Some(reason) => format!("↷ {step} skipped ({reason})"),
            None => format!("↷ {step} skipped"),
        },
        "step.cancelled" => match data["reason"].as_str() {
            Some(reason) => format!("⊘ {step} cancelled ({reason})"),
            None => format!("⊘ {step} cancelled"),
        },
        other => format!("· {step} {}", other.strip_prefix("step.").unwrap_or(other)),
    };
    Some(format!("  {line}"))
}

/// `kind: message` of a step or run error.
fn error_text(error: &Value) -> String {
    match (error["kind"].as_str(), error["message"].as_str()) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (None, Some(message)) => message.to_owned(),
        _ => error.to_string(),
    }
}

/// The outcome on stderr (and the result on stdout); the exit code.
async fn report(client: &Client, run: &Value) -> anyhow::Result<ExitCode> {
    let id = run["id"].as_str().unwrap_or("?");
    let status = run["status"].as_str().unwrap_or("?");
    let took = run["duration_ms"]
        .as_i64()
        .map(|ms| format!(" in {ms} ms"))
        .unwrap_or_default();
    match status {
        "completed" => {
            eprintln!("run {id} completed{took}");
            println!("{}", pretty(&run["result"]));
            return Ok(ExitCode::SUCCESS);
        }
        "paused" => {
            let paused_on: Vec<&str> = run["paused_on"]
                .as_array()
                .map(|steps| steps.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            eprintln!("run {id} paused on {}; resume with:", paused_on.join(", "));
            for step in paused_on {
                eprintln!("  {}", resume_hint(client, run, step).await);
            }
            return Ok(ExitCode::from(EXIT_PAUSED));
        }
        "failed" => {
            let error = &run["error"];
            match error["step_id"].as_str() {
                Some(step) => {
                    eprintln!("run {id} failed{took}: step {step}: {}", error_text(error));
                    eprintln!(
                        "  retry the step with: weft run resume {id} --step {step}\n  or complete it by hand: weft run resume {id} --step {step} --override-output '<json>'"
                    );
                }
                None => eprintln!("run {id} failed{took}: {}", error_text(error)),
            }
        }
        "declined" => {
            let declined = &run["result"]["declined"];
            match (declined["step"].as_str(), declined["action"].as_str()) {
                (Some(step), Some(action)) => {
                    eprintln!("run {id} declined at step {step} (action {action})");
                }
                _ => eprintln!("run {id} declined"),
            }
        }
        other if run["error"].is_null() => eprintln!("run {id} {other}{took}"),
        other => eprintln!("run {id} {other}{took}: {}", error_text(&run["error"])),
    }
    Ok(ExitCode::FAILURE)
}

/// The command that resumes `step`, as precise as the definition allows.
async fn resume_hint(client: &Client, run: &Value, step: &str) -> String {
    let id = run["id"].as_str().unwrap_or("?");
    let prefix = format!("weft run resume {id} --step {step}");
    let kind = run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == step))
        .and_then(|s| s["kind"].as_str())
        .unwrap_or("");
    match kind {
        "request_user_action" => {
            let actions = step_config(client, run, step)
                .await
                .and_then(|config| {
                    let names: Vec<String> = config["actions"]
                        .as_array()?
                        .iter()
                        .filter_map(|a| a.as_str().map(str::to_owned))
                        .collect();
                    (!names.is_empty()).then(|| names.join("|"))
                })
                .unwrap_or_else(|| "NAME".to_owned());
            format!("{prefix} --action <{actions}>")
        }
        "collect_inputs" => format!("{prefix} --data '<json>'"),
        _ => prefix,
    }
}

/// The step's config in the run's workflow version, if this key may read it.
async fn step_config(client: &Client, run: &Value, step: &str) -> Option<Value> {
    let workflow = run["workflow"].as_str()?;
    let version = run["version"].as_str()?.to_owned();
    let found = client
        .get_query(&["v1", "workflows", workflow], &[("version", version)])
        .await
        .ok()?;
    found["definition"]["steps"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == step)
        .map(|s| s["config"].clone())
}
