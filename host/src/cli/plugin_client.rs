//! `weft plugin push`, `weft plugin list`, `weft plugin grant`: the plugin
//! publisher's commands against a server, through the HTTP API only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, Connection};

/// `weft plugin push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    #[command(flatten)]
    connection: Connection,
    /// The component (`.wasm`) to upload to the server; name and version
    /// come from its describe(). Or `oci://host/namespace/name:version`,
    /// followed by the component, to push it to that OCI registry instead.
    #[arg(value_name = "FILE | oci://REFERENCE")]
    target: String,
    /// The component, after an `oci://` reference.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// List it in every tenant's catalog as `<your tenant>/<name>`.
    #[arg(long)]
    public: bool,
    #[command(flatten)]
    registry: super::plugin_oci::RegistryArgs,
}

/// `weft plugin list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only plugins whose name or description contains this.
    #[arg(long, short)]
    q: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `weft plugin grant`.
#[derive(Debug, clap::Args)]
pub struct GrantArgs {
    #[command(flatten)]
    connection: Connection,
    /// `name` (a built-in or your own) or `publisher/name`.
    plugin: String,
    /// A host outbound HTTP may reach: `api.example.com`, `host:port`,
    /// `*.example.com` (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// A secret the plugin may read (repeatable).
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Let it queue mail.
    #[arg(long)]
    mail: bool,
    /// Let it use the key-value store.
    #[arg(long)]
    kv: bool,
    /// Let it read files.
    #[arg(long)]
    files: bool,
}

/// The 2xx body, or the problem's detail as the error.
fn success(what: &str, status: reqwest::StatusCode, body: Value) -> anyhow::Result<Value> {
    if status.is_success() {
        return Ok(body);
    }
    let detail = body["detail"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned);
    anyhow::bail!("{what}: {detail} ({})", status.as_u16())
}

pub async fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let path = match (args.target.starts_with("oci://"), &args.file) {
        (true, Some(file)) => {
            if args.public {
                anyhow::bail!(
                    "--public is for a server's catalog; a registry decides who may pull"
                );
            }
            return super::plugin_oci::push(&args.target, file, &args.registry).await;
        }
        (true, None) => anyhow::bail!(
            "name the component to push after the reference: weft plugin push {} FILE",
            args.target
        ),
        (false, Some(_)) => anyhow::bail!(
            "to push to an OCI registry, start the reference with oci:// (weft plugin push oci://host/namespace/name:version FILE); to upload to a server, name only the file"
        ),
        (false, None) => PathBuf::from(&args.target),
    };
    let client = Client::new(&args.connection)?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let file_name = path.file_name().map_or_else(
        || "plugin.wasm".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let form = reqwest::multipart::Form::new()
        .part(
            "component",
            reqwest::multipart::Part::bytes(bytes)
                .file_name(file_name)
                .mime_str("application/wasm")?,
        )
        .text("visibility", if args.public { "public" } else { "private" });
    let request = client
        .request(Method::POST, &["v1", "plugins"])
        .multipart(form);
    let (status, body) = client.send(request).await?;
    let plugin = success("push", status, body)?;
    println!(
        "published {}@{} ({}, sha256 {})",
        plugin["name"].as_str().unwrap_or("?"),
        plugin["version"].as_str().unwrap_or("?"),
        plugin["visibility"].as_str().unwrap_or("?"),
        plugin["sha256"].as_str().unwrap_or("?"),
    );
    let requested = plugin["capabilities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !requested.is_empty() {
        println!(
            "it asks for {}; nothing is granted until `weft plugin grant`",
            requested
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.connection)?;
    let query: Vec<(&str, String)> = args.q.into_iter().map(|q| ("q", q)).collect();
    let list = client.get_query(&["v1", "plugins"], &query).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let rows: Vec<[String; 4]> = items
        .iter()
        .map(|p| {
            let origin = if p["builtin"] == true {
                "built-in".to_owned()
            } else {
                p["visibility"].as_str().unwrap_or("?").to_owned()
            };
            let yanked = if p["yanked"] == true { " yanked" } else { "" };
            [
                p["name"].as_str().unwrap_or("?").to_owned(),
                p["version"].as_str().unwrap_or("?").to_owned(),
                format!("{origin}{yanked}"),
                p["description"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0).max(4), width(1).max(7), width(2).max(6));
    println!(
        "{:w0$}  {:w1$}  {:w2$}  DESCRIPTION",
        "NAME", "VERSION", "STATUS"
    );
    for [name, version, status, description] in rows {
        println!("{name:w0$}  {version:w1$}  {status:w2$}  {description}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn grant(args: GrantArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.connection)?;
    let body = json!({
        "allowed_hosts": args.hosts,
        "secrets": args.secrets,
        "mail": args.mail,
        "kv": args.kv,
        "files": args.files,
    });
    let view = client
        .call(
            Method::PUT,
            &["v1", "plugins", &args.plugin, "grants"],
            Some(&body),
        )
        .await?;
    println!(
        "{}: granted {}",
        view["plugin"].as_str().unwrap_or(&args.plugin),
        view["granted"]
    );
    let ungranted: Vec<&str> = view["ungranted"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !ungranted.is_empty() {
        println!("requested but not granted: {}", ungranted.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
