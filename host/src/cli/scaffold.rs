//! `weft plugin new`: a plugin project that builds with one command, with
//! the SDK and the WIT package inside it, so it needs nothing from this
//! repository.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

mod files {
    include!(concat!(env!("OUT_DIR"), "/scaffold_files.rs"));
}

/// The languages `weft plugin new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase snake_case (`send_digest`); also the
    /// directory created.
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Where to create the project (default: `./<name>`).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// What builds the project, run inside it.
fn build_command(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Rust => "cargo build --release --target wasm32-wasip2".to_owned(),
        Lang::Python => {
            format!("componentize-py -d wit -w step-plugin componentize app -p . -o {name}.wasm")
        }
        Lang::Js => format!("npm install && node build.mjs app.js wit {name}.wasm"),
    }
}

/// Where the build puts the component, inside the project.
fn component_path(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Rust => format!("target/wasm32-wasip2/release/{name}.wasm"),
        Lang::Python | Lang::Js => format!("{name}.wasm"),
    }
}

pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!(
            "plugin name {name:?} must be lowercase snake_case: a letter, then letters, digits or _"
        );
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let template = match args.lang {
        Lang::Rust => files::RUST,
        Lang::Python => files::PYTHON,
        Lang::Js => files::JS,
    };
    for (path, text) in template {
        let text = text
            .replace("{{name}}", name)
            .replace("weft-js-toolchain", name);
        // The vendored Rust SDK finds the WIT package beside it.
        let text = if path.starts_with("weft-sdk/") {
            text.replace("path: \"../../wit\"", "path: \"../wit\"")
        } else {
            text
        };
        write(&dir, path, &text)?;
    }
    match args.lang {
        Lang::Rust => {
            write(&dir, "weft-sdk/Cargo.toml", RUST_SDK_MANIFEST)?;
            write(&dir, ".gitignore", "/target\n")?;
        }
        Lang::Js => write(&dir, ".gitignore", "/node_modules\n*.wasm\n")?,
        Lang::Python => write(&dir, ".gitignore", "*.wasm\n__pycache__/\n")?,
    }
    for (path, text) in files::WIT {
        write(&dir, &format!("wit/{path}"), text)?;
    }
    let build = build_command(args.lang, name);
    let component = component_path(args.lang, name);
    write(
        &dir,
        "README.md",
        &format!(
            "# {name}\n\nA Weft step plugin.\n\nBuild:\n\n    {build}\n\nTry it:\n\n    weft plugin run {component} --config '{{\"name\": \"Ada\"}}'\n\nPublish it to a server:\n\n    weft plugin push {component} --url http://127.0.0.1:8080 --key $WEFT_KEY\n"
        ),
    )?;
    println!("created {} ({:?})", dir.display(), args.lang);
    println!("build:  cd {} && {build}", dir.display());
    println!(
        "try:    weft plugin run {}/{component} --config '{{\"name\": \"Ada\"}}'",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write(dir: &Path, path: &str, text: &str) -> anyhow::Result<()> {
    let target = dir.join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))
}

/// The vendored SDK's manifest (the repository's inherits from the plugins
/// workspace).
const RUST_SDK_MANIFEST: &str = r#"[package]
name = "weft-sdk"
version = "0.1.0"
edition = "2024"

[lib]
name = "weft_sdk"

[dependencies]
wit-bindgen = "0.61"
serde = { version = "1", features = ["derive"] }
serde_json = { version = "1", features = ["arbitrary_precision"] }
"#;
