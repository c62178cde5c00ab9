//! Builds what the binary embeds, and only that: the built-in plugins
//! (from the guest workspace in `plugins/`, for `wasm32-wasip2`, in one
//! cargo invocation), the files `weft plugin new` writes, and the dashboard
//! (`ui/`, with npm and Vite). Test fixtures are built by the tests that
//! use them (`tests/common/guests.rs`), in the same guest target dir, which
//! this script names to them as `WEFT_GUEST_TARGET`.
//!
//! Under `cargo clippy` the dashboard is not built (npm does not run): the
//! binary it would embed it in is never linked.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins embedded in the binary, in catalog order.
const BUILTINS: [&str; 11] = [
    "send_email",
    "create_notification",
    "send_invoice_reminder",
    "generate_recurring_invoice",
    "mark_invoices_overdue",
    "invoicing_ar_summary",
    "forms_submission_digest",
    "payments_summary",
    "extract_document",
    "http_request",
    "transform",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    // What the built-ins are built from, and the directories whose file
    // lists the scaffold takes (included files are tracked by rustc).
    for watched in ["plugins", "sdk/rust", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=WEFT_GUEST_TARGET_DIR");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let guest_target = env::var_os("WEFT_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_guest_target(&out_dir));
    build_guests(&root, &guest_target);

    let artifacts = guest_target.join("wasm32-wasip2").join("release");
    let mut generated = String::from(
        "/// Built-in plugins: (name, component bytes).\npub const BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for name in BUILTINS {
        let path = artifacts.join(format!("{name}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        writeln!(
            generated,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("write to string");
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("builtins.rs"), generated).expect("write builtins.rs");
    println!(
        "cargo:rustc-env=WEFT_GUEST_TARGET={}",
        guest_target.display()
    );

    write_scaffold_files(&root, &out_dir);
    println!("cargo:rerun-if-env-changed=RUSTC_WORKSPACE_WRAPPER");
    if clippy() {
        std::fs::write(
            out_dir.join("ui_assets.rs"),
            UI_ASSETS_HEADER.to_owned() + "];\n",
        )
        .expect("write ui_assets.rs");
    } else {
        build_dashboard(&root.join("ui"), &out_dir);
    }
}

/// Whether this is `cargo clippy`, which runs rustc through clippy-driver.
fn clippy() -> bool {
    env::var_os("RUSTC_WORKSPACE_WRAPPER").is_some_and(|wrapper| {
        Path::new(&wrapper)
            .file_stem()
            .is_some_and(|stem| stem.to_string_lossy().starts_with("clippy-driver"))
    })
}

const UI_ASSETS_HEADER: &str = "/// The dashboard's files: (path under /ui/, content type, bytes).\npub const UI_ASSETS: &[(&str, &str, &[u8])] = &[\n";

/// `scaffold_files.rs`: what `weft plugin new` writes, per language, as
/// (path in the new project, contents): the template, the SDK and the WIT.
fn write_scaffold_files(root: &Path, out_dir: &Path) {
    let mut wit = Vec::new();
    collect_files(&root.join("wit"), &mut wit);
    wit.sort();
    let mut rust_sdk = Vec::new();
    collect_files(&root.join("sdk").join("rust").join("src"), &mut rust_sdk);
    rust_sdk.sort();
    let entry = |generated: &mut String, to: &str, from: &Path| {
        writeln!(
            generated,
            "    ({to:?}, include_str!({:?})),",
            from.display().to_string()
        )
        .expect("write to string");
    };
    let relative = |base: &Path, file: &Path| {
        file.strip_prefix(base)
            .expect("under its directory")
            .to_string_lossy()
            .replace('\\', "/")
    };
    let mut generated = String::from(
        "/// The WIT package every plugin builds against: (path under wit/, text).\npub const WIT: &[(&str, &str)] = &[\n",
    );
    for file in &wit {
        entry(&mut generated, &relative(&root.join("wit"), file), file);
    }
    generated.push_str("];\n/// A Python plugin: its template and the SDK.\npub const PYTHON: &[(&str, &str)] = &[\n");
    let python = root.join("sdk").join("python");
    entry(
        &mut generated,
        "app.py",
        &python.join("template").join("app.py"),
    );
    entry(
        &mut generated,
        "weft_sdk/__init__.py",
        &python.join("weft_sdk").join("__init__.py"),
    );
    generated.push_str("];\n/// A JavaScript plugin: its template, the SDK and the build script.\npub const JS: &[(&str, &str)] = &[\n");
    let js = root.join("sdk").join("js");
    entry(
        &mut generated,
        "app.js",
        &js.join("template").join("app.js"),
    );
    for file in [
        "weft-sdk.js",
        "build.mjs",
        "package.json",
        "package-lock.json",
    ] {
        entry(&mut generated, file, &js.join(file));
    }
    generated.push_str(
        "];\n/// A C plugin: its template and the SDK.\npub const C: &[(&str, &str)] = &[\n",
    );
    let c = root.join("sdk").join("c");
    entry(
        &mut generated,
        "plugin.c",
        &c.join("template").join("plugin.c"),
    );
    for file in ["weft.h", "weft.c"] {
        entry(&mut generated, file, &c.join(file));
    }
    generated.push_str(
        "];\n/// A Go plugin: its template and the SDK.\npub const GO: &[(&str, &str)] = &[\n",
    );
    let go = root.join("sdk").join("go");
    for file in ["plugin.go", "go.mod"] {
        entry(&mut generated, file, &go.join("template").join(file));
    }
    for file in ["weft/weft.go", "export_weft_plugin_step/step.go"] {
        entry(&mut generated, file, &go.join(file));
    }
    generated.push_str("];\n/// A Rust plugin: its template and the SDK's sources.\npub const RUST: &[(&str, &str)] = &[\n");
    let rust = root.join("sdk").join("rust");
    entry(
        &mut generated,
        "Cargo.toml",
        &rust.join("template").join("Cargo.toml"),
    );
    entry(
        &mut generated,
        "src/lib.rs",
        &rust.join("template").join("src").join("lib.rs"),
    );
    for file in &rust_sdk {
        let to = format!("weft-sdk/src/{}", relative(&rust.join("src"), file));
        entry(&mut generated, &to, file);
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("scaffold_files.rs"), generated).expect("write scaffold_files.rs");
}

/// Installs the dashboard's npm packages when the lock file is newer than
/// the install, builds it with Vite into `OUT_DIR/ui` and writes
/// `ui_assets.rs`: every file with its content type, embedded so the binary
/// serves the dashboard offline.
fn build_dashboard(ui: &Path, out_dir: &Path) {
    for watched in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.js",
    ] {
        println!("cargo:rerun-if-changed={}", ui.join(watched).display());
    }
    let installed = ui.join("node_modules").join(".package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&installed) < modified(&ui.join("package-lock.json")) {
        run_npm(
            ui,
            &["ci", "--no-audit", "--no-fund"],
            "install the dashboard's packages",
        );
    }
    let dist = out_dir.join("ui");
    let vite = ui
        .join("node_modules")
        .join("vite")
        .join("bin")
        .join("vite.js");
    let output = Command::new("node")
        .arg(vite)
        .args(["build", "--emptyOutDir", "--logLevel", "warn", "--outDir"])
        .arg(&dist)
        .current_dir(ui)
        .output()
        .unwrap_or_else(|e| {
            panic!("running node to build the dashboard (is Node.js 20.19+ installed?): {e}")
        });
    if !output.status.success() {
        panic!(
            "building the dashboard in ui/ failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut files = Vec::new();
    collect_files(&dist, &mut files);
    files.sort();
    let mut generated = String::from(UI_ASSETS_HEADER);
    for file in files {
        let relative = file.strip_prefix(&dist).expect("under dist");
        let relative = relative.to_string_lossy().replace('\\', "/");
        // Vite writes text as UTF-8; browsers assume otherwise without a charset.
        let mime = mime_guess::from_path(&file).first_or_octet_stream();
        let content_type = if mime.type_() == mime_guess::mime::TEXT {
            format!("{mime}; charset=utf-8")
        } else {
            mime.to_string()
        };
        writeln!(
            generated,
            "    ({relative:?}, {content_type:?}, include_bytes!({:?})),",
            file.display().to_string()
        )
        .expect("write to string");
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("ui_assets.rs"), generated).expect("write ui_assets.rs");
}

fn run_npm(dir: &Path, args: &[&str], what: &str) {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap_or_else(|e| panic!("running npm to {what} (is npm installed?): {e}"));
    assert!(
        status.success(),
        "npm {} failed in {}",
        args.join(" "),
        dir.display()
    );
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// `<target-dir>/guest`, found from OUT_DIR (`<target-dir>/<profile>/build/<pkg>/out`),
/// so debug, release and clippy builds share one guest build.
fn default_guest_target(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .map(|target| target.join("guest"))
        .unwrap_or_else(|| out_dir.join("guest"))
}

fn build_guests(root: &Path, guest_target: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("plugins").join("Cargo.toml"))
        .args(BUILTINS.iter().flat_map(|name| ["-p", name]))
        .env("CARGO_TARGET_DIR", guest_target);
    // What cargo sets for the host build must not leak into the guest build
    // (a build dir set for the host's is locked by the cargo running this
    // script: the guest build would wait for it forever).
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_BUILD_DIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    for (key, _) in env::vars_os() {
        if let Some(key) = key.to_str()
            && key.starts_with("CARGO_PROFILE_")
        {
            command.env_remove(key);
        }
    }
    let output = command.output().expect("run cargo for the guest workspace");
    if !output.status.success() {
        panic!(
            "building the plugins in plugins/ for wasm32-wasip2 failed.\n\
             If the target is missing, run `rustup target add wasm32-wasip2`.\n\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
