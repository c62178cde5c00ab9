//! `weft workflow apply`: create or update a definition from a file, and
//! optionally publish it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, Connection};

#[derive(Debug, clap::Args)]
pub struct WorkflowArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: WorkflowCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WorkflowCommand {
    /// Creates the workflow, or adds a draft version if it exists.
    Apply {
        /// The definition: `.json`, `.yaml` or `.yml`; `-` reads JSON or
        /// YAML from standard input.
        #[arg(short = 'f', long = "file")]
        file: String,
        /// Publish the version just saved.
        #[arg(long)]
        publish: bool,
    },
}

pub async fn run(args: WorkflowArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.connection)?;
    match args.command {
        WorkflowCommand::Apply { file, publish } => apply(&client, &file, publish).await,
    }
}

async fn apply(client: &Client, file: &str, publish: bool) -> anyhow::Result<ExitCode> {
    let definition = read_definition(file)?;
    let key = definition["key"]
        .as_str()
        .with_context(|| format!("{file}: the definition needs a string `key`"))?
        .to_owned();
    let exists = client.get_optional(&["v1", "workflows", &key]).await?;
    let (verb, saved) = match exists {
        None => (
            "created",
            client.post(&["v1", "workflows"], &definition).await?,
        ),
        Some(_) => (
            "updated",
            client
                .call(Method::PUT, &["v1", "workflows", &key], Some(&definition))
                .await?,
        ),
    };
    let version = saved["version"]
        .as_str()
        .context("the server's answer has no version")?;
    if publish {
        client
            .post(
                &["v1", "workflows", &key, "publish"],
                &json!({"version": version}),
            )
            .await?;
        println!("published {key} {version}");
    } else {
        let status = saved["status"].as_str().unwrap_or("draft");
        println!("{verb} {key} {version} ({status})");
    }
    Ok(ExitCode::SUCCESS)
}

/// A definition from a JSON or YAML file (by extension), or from stdin.
fn read_definition(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the definition from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    let extension = Path::new(file)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let value = match extension.as_deref() {
        Some("json") => {
            serde_json::from_str(&text).with_context(|| format!("{file}: invalid JSON"))?
        }
        Some("yaml" | "yml") => {
            serde_norway::from_str(&text).with_context(|| format!("{file}: invalid YAML"))?
        }
        // YAML is (nearly) a superset of JSON: JSON first, for its exact numbers.
        _ => match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(_) => serde_norway::from_str(&text)
                .with_context(|| format!("{file}: neither JSON nor YAML"))?,
        },
    };
    match value {
        Value::Object(_) => Ok(value),
        other => anyhow::bail!("{file}: a definition is an object, found {other}"),
    }
}
