//! `weft tenant …` (the operator's) and `weft key …` (a tenant admin's):
//! tenants and API keys, through the HTTP API only.

use std::process::ExitCode;

use anyhow::Context as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{ApiProblem, Client, Connection, pretty};

#[derive(Debug, clap::Args)]
pub struct TenantArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TenantCommand {
    /// Creates a tenant; prints its id and its first admin key (shown once).
    ///
    /// Needs the operator's key (the server's WEFT_ADMIN_KEY, or the key it
    /// wrote to weft-data/admin-key on first start).
    Create {
        /// 1-64 letters, digits, `-` or `_`.
        name: String,
    },
    /// Lists every tenant (operator's key only).
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeyCommand {
    /// Creates an API key in your tenant; prints the key (shown once) and
    /// its id. Needs a key with the `admin` scope.
    Create {
        /// What the key is for, to recognise it in `weft key list`.
        #[arg(long)]
        name: String,
        /// Comma-separated (or repeated): `runs:read,runs:start`, `admin`, ….
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        scopes: Vec<String>,
        /// When the key stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
        /// A `wft_test_` key instead of `wft_live_`.
        #[arg(long)]
        test: bool,
    },
    /// Lists your tenant's keys (never the keys themselves).
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a key at once.
    Revoke {
        /// The key's id (from `weft key list`), not the key.
        id: String,
    },
}

pub async fn tenant(args: TenantArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.connection)?;
    match args.command {
        TenantCommand::Create { name } => {
            let tenant = client
                .post(&["v1", "tenants"], &json!({"name": name}))
                .await
                .map_err(|e| hint_on_403(e, OPERATOR_HINT))?;
            let id = field(&tenant, "id")?;
            let key = field(&tenant, "admin_key")?;
            println!("created tenant {} (id {id})", text(&tenant["name"]));
            println!("admin key (shown only once, store it now): {key}");
        }
        TenantCommand::List { json } => {
            let list = client
                .get(&["v1", "tenants"])
                .await
                .map_err(|e| hint_on_403(e, OPERATOR_HINT))?;
            if json {
                println!("{}", pretty(&list));
            } else {
                let rows = items(&list)
                    .iter()
                    .map(|t| vec![text(&t["id"]), text(&t["name"]), text(&t["created_at"])])
                    .collect();
                print_table(&["ID", "NAME", "CREATED"], rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn key(args: KeyArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.connection)?;
    match args.command {
        KeyCommand::Create {
            name,
            scopes,
            expires_at,
            test,
        } => {
            let scopes: Vec<String> = scopes
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            let mut body = json!({"name": name, "scopes": scopes, "test": test});
            if let Some(at) = expires_at {
                body["expires_at"] = json!(at);
            }
            let created = client
                .post(&["v1", "api-keys"], &body)
                .await
                .map_err(|e| hint_on_403(e, ADMIN_HINT))?;
            let id = field(&created, "id")?;
            let key = field(&created, "key")?;
            println!(
                "created key {} (id {id}, scopes {}, expires {})",
                text(&created["name"]),
                scopes_text(&created["scopes"]),
                if created["expires_at"].is_null() {
                    "never".to_owned()
                } else {
                    text(&created["expires_at"])
                },
            );
            println!("key (shown only once, store it now): {key}");
        }
        KeyCommand::List { json } => {
            let list = client
                .get(&["v1", "api-keys"])
                .await
                .map_err(|e| hint_on_403(e, ADMIN_HINT))?;
            if json {
                println!("{}", pretty(&list));
            } else {
                let rows = items(&list)
                    .iter()
                    .map(|k| {
                        vec![
                            text(&k["id"]),
                            text(&k["name"]),
                            text(&k["prefix"]),
                            scopes_text(&k["scopes"]),
                            or_dash(&k["last_used_at"]),
                            or_dash(&k["expires_at"]),
                            or_dash(&k["revoked_at"]),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "ID",
                        "NAME",
                        "PREFIX",
                        "SCOPES",
                        "LAST USED",
                        "EXPIRES",
                        "REVOKED",
                    ],
                    rows,
                );
            }
        }
        KeyCommand::Revoke { id } => {
            client
                .call(Method::DELETE, &["v1", "api-keys", &id], None)
                .await
                .map_err(|e| hint_on_403(e, ADMIN_HINT))?;
            println!("revoked key {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

const OPERATOR_HINT: &str = "tenants are managed with the operator's key only (the server's \
     WEFT_ADMIN_KEY or its first-start admin key), not a tenant's admin key";

const ADMIN_HINT: &str = "managing API keys needs a key with the `admin` scope";

/// A 403 gets a hint on which key the command needs before the problem.
fn hint_on_403(error: anyhow::Error, hint: &'static str) -> anyhow::Error {
    match error.downcast_ref::<ApiProblem>() {
        Some(problem) if problem.status == StatusCode::FORBIDDEN => error.context(hint),
        _ => error,
    }
}

fn field<'a>(value: &'a Value, name: &str) -> anyhow::Result<&'a str> {
    value[name]
        .as_str()
        .with_context(|| format!("the server's answer has no {name}: {value}"))
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// A JSON string without its quotes; anything else as JSON.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// `-` for null or missing.
fn or_dash(value: &Value) -> String {
    if value.is_null() {
        "-".to_owned()
    } else {
        text(value)
    }
}

fn scopes_text(value: &Value) -> String {
    value.as_array().map_or_else(
        || text(value),
        |scopes| scopes.iter().map(text).collect::<Vec<_>>().join(","),
    )
}

/// Columns padded to their widest cell, two spaces apart.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: &[String]| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out
    };
    let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    println!("{}", line(&headers));
    for row in &rows {
        println!("{}", line(row));
    }
}
