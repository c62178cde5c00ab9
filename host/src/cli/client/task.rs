//! `weft task …`: the tasks people are asked to do in paused runs.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::{Client, Connection, pretty};

#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TaskCommand {
    /// Lists tasks, newest first, one per line: id, status, assignee,
    /// workflow/step, title.
    List {
        /// open, viewed, completed, declined, expired or revoked.
        #[arg(long)]
        status: Option<String>,
        /// Only this assignee's tasks.
        #[arg(long)]
        assignee: Option<String>,
        /// Only this run's tasks.
        #[arg(long)]
        run: Option<String>,
        /// Only tasks of this workflow's runs.
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many (1-100).
        #[arg(long, default_value_t = 25)]
        limit: u32,
    },
    /// Prints a task as JSON, with its link while it is open.
    Get {
        /// The task's id.
        id: String,
    },
    /// Mails the assignee a reminder now.
    Remind {
        /// The task's id.
        id: String,
    },
    /// Gives the task to someone else: its link stops working and the new
    /// assignee gets a new one. Prints the new task.
    Reassign {
        /// The task's id.
        id: String,
        /// The new assignee: an email address or a user id.
        #[arg(long)]
        to: String,
    },
    /// Revokes the task: its link stops working.
    Revoke {
        /// The task's id.
        id: String,
    },
}

pub async fn task(args: TaskArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.connection)?;
    let task = match args.command {
        TaskCommand::List {
            status,
            assignee,
            run,
            workflow,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (name, value) in [
                ("status", status),
                ("assignee", assignee),
                ("run_id", run),
                ("workflow", workflow),
            ] {
                if let Some(value) = value {
                    query.push((name, value));
                }
            }
            let list = client.get_query(&["v1", "tasks"], &query).await?;
            for t in list["items"].as_array().into_iter().flatten() {
                println!(
                    "{} {} {} {}/{} {}",
                    text(&t["id"]),
                    text(&t["status"]),
                    text(&t["assignee"]),
                    text(&t["workflow"]),
                    text(&t["step_id"]),
                    text(&t["title"])
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        TaskCommand::Get { id } => client.get(&["v1", "tasks", &id]).await?,
        TaskCommand::Remind { id } => {
            client
                .post(&["v1", "tasks", &id, "remind"], &json!({}))
                .await?
        }
        TaskCommand::Reassign { id, to } => {
            client
                .post(&["v1", "tasks", &id, "reassign"], &json!({"assignee": to}))
                .await?
        }
        TaskCommand::Revoke { id } => {
            client
                .post(&["v1", "tasks", &id, "revoke"], &json!({}))
                .await?
        }
    };
    println!("{}", pretty(&task));
    Ok(ExitCode::SUCCESS)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}
