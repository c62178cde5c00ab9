//! Builds the guest workspace (`plugins/`: the SDK, the built-in plugins and
//! the test fixtures) for `wasm32-wasip2` in one cargo invocation, then
//! embeds the built-in plugins in the binary and tells tests where the
//! fixtures are (`WEFT_GUEST_DIR`). Builds the Python and JavaScript
//! guests (`tests/fixtures/{python,js}/*`) with componentize-py and
//! componentize-js when they are installed (`WEFT_PYTHON_GUEST_DIR`,
//! `WEFT_JS_GUEST_DIR`, empty when not). Also builds the
//! dashboard (`ui/`, with npm and Vite) into OUT_DIR and embeds its files.

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
    // Not all of sdk/: sdk/js/node_modules is large and watched through
    // its lock file below.
    for watched in [
        "plugins",
        "sdk/rust",
        "sdk/python",
        "sdk/c",
        "sdk/go",
        "sdk/js/weft-sdk.js",
        "sdk/js/build.mjs",
        "sdk/js/template",
        "sdk/js/package.json",
        "sdk/js/package-lock.json",
        "wit",
        "tests/fixtures",
    ] {
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
    println!("cargo:rustc-env=WEFT_GUEST_DIR={}", artifacts.display());

    let python = build_python_guests(&root, &guest_target.join("python"));
    println!(
        "cargo:rustc-env=WEFT_PYTHON_GUEST_DIR={}",
        python.map(|d| d.display().to_string()).unwrap_or_default()
    );
    // Watched only when present: cargo treats a missing watched file as
    // changed, which would rerun this script on every build.
    let js_install = root.join("sdk/js/node_modules/.package-lock.json");
    if js_install.exists() {
        println!("cargo:rerun-if-changed={}", js_install.display());
    }
    let js = build_js_guests(&root, &guest_target.join("js"));
    println!(
        "cargo:rustc-env=WEFT_JS_GUEST_DIR={}",
        js.map(|d| d.display().to_string()).unwrap_or_default()
    );

    write_scaffold_files(&root, &out_dir);
    build_dashboard(&root.join("ui"), &out_dir);
}

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

/// componentize-py: `WEFT_COMPONENTIZE_PY`, or on the PATH.
fn componentize_py() -> Option<(PathBuf, String)> {
    println!("cargo:rerun-if-env-changed=WEFT_COMPONENTIZE_PY");
    let program = env::var_os("WEFT_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("componentize-py"));
    let output = Command::new(&program).arg("--version").output().ok()?;
    output.status.success().then(|| {
        (
            program,
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        )
    })
}

/// Builds every `tests/fixtures/python/<name>/app.py` and
/// `plugins/python/<name>/app.py` into `<out>/<name>.wasm` with the Python SDK. `None` without componentize-py.
fn build_python_guests(root: &Path, out: &Path) -> Option<PathBuf> {
    let Some((program, version)) = componentize_py() else {
        println!(
            "cargo:warning=componentize-py not found (scripts/test installs it): the Python plugins are not built and their tests skip"
        );
        return None;
    };
    let sdk = root.join("sdk").join("python");
    let mut shared = Vec::new();
    collect_files(&sdk.join("weft_sdk"), &mut shared);
    let stage = out.join("stage");
    let apps = ScriptedApps {
        root,
        language: "python",
        entry: "app.py",
    };
    build_scripted_guests(apps, &shared, &version, out, |dir, wit, wasm| {
        // componentize-py's interpreter writes __pycache__ beside what it
        // imports: build from copies, never the source tree.
        let staged = stage_copy(dir, &stage);
        let sdk_copy = stage_copy(&sdk.join("weft_sdk"), &stage.join("sdk"));
        let mut command = Command::new(&program);
        command
            .arg("-d")
            .arg(wit)
            .args(["-w", "step-plugin", "componentize", "app", "-p"])
            .arg(&staged)
            .arg("-p")
            .arg(sdk_copy.parent().expect("staged under sdk/"))
            .arg("-o")
            .arg(wasm);
        command
    })
}

/// Builds every `tests/fixtures/js/<name>/app.js` and `plugins/js/<name>/app.js`
/// into `<out>/<name>.wasm` with componentize-js (`sdk/js`, its packages installed by
/// scripts/toolchains), the SDK copied beside the app. `None` without them.
fn build_js_guests(root: &Path, out: &Path) -> Option<PathBuf> {
    let js = root.join("sdk").join("js");
    let installed = js
        .join("node_modules")
        .join("@bytecodealliance")
        .join("componentize-js")
        .join("package.json");
    let version = std::fs::read_to_string(&installed).ok().zip(
        Command::new("node")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success()),
    );
    let Some((package, node)) = version else {
        println!(
            "cargo:warning=componentize-js not installed in sdk/js (scripts/test installs it): the JavaScript plugins are not built and their tests skip"
        );
        return None;
    };
    let version = format!("{package}{}", String::from_utf8_lossy(&node.stdout));
    let sdk = js.join("weft-sdk.js");
    let shared = [sdk.clone(), js.join("build.mjs")];
    let stage = out.join("stage");
    let apps = ScriptedApps {
        root,
        language: "js",
        entry: "app.js",
    };
    build_scripted_guests(apps, &shared, &version, out, |dir, wit, wasm| {
        // componentize-js resolves relative imports from the app's own
        // directory: stage the app with the SDK beside it.
        let staged = stage_copy(dir, &stage);
        std::fs::copy(&sdk, staged.join("weft-sdk.js")).expect("stage the SDK");
        let mut command = Command::new("node");
        command
            .arg(js.join("build.mjs"))
            .arg(staged.join("app.js"))
            .arg(wit)
            .arg(wasm)
            .current_dir(&js);
        command
    })
}

/// Fixtures built for the wrong world, against `<this>/wit`.
const WRONG_WORLD: &str = "tests/fixtures/wrong_world";

/// The WIT package an app builds against: a `wit` beside its directory
/// (the wrong-world fixtures), else the project's.
fn wit_for(dir: &Path, wit: &Path) -> PathBuf {
    dir.parent()
        .map(|parent| parent.join("wit"))
        .filter(|own| own.is_dir())
        .unwrap_or_else(|| wit.to_path_buf())
}

/// Copies `dir` to `<stage>/<its name>` (replacing an earlier copy);
/// returns the copy.
fn stage_copy(dir: &Path, stage: &Path) -> PathBuf {
    let staged = stage.join(dir.file_name().expect("named"));
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).expect("create a stage dir");
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    for file in files {
        if file.components().any(|c| c.as_os_str() == "__pycache__") {
            continue;
        }
        let to = staged.join(file.strip_prefix(dir).expect("under the dir"));
        std::fs::create_dir_all(to.parent().expect("has a parent")).expect("stage dir");
        std::fs::copy(&file, &to).expect("stage a file");
    }
    staged
}

/// Where a scripted language's apps are: each directory holding `entry`
/// under `tests/fixtures/<language>`, `plugins/<language>` and the
/// wrong-world fixtures.
struct ScriptedApps<'a> {
    root: &'a Path,
    language: &'a str,
    entry: &'a str,
}

/// Builds each app into `<out>/<name>.wasm` with the command
/// `build(dir, wit, wasm)` gives, `wit` being the package the app builds
/// against ([`wit_for`]), unless its inputs (the app, that WIT, `shared`,
/// the toolchain `version`) are unchanged since the last build: a Python
/// or JavaScript component takes seconds.
fn build_scripted_guests(
    apps: ScriptedApps<'_>,
    shared: &[PathBuf],
    version: &str,
    out: &Path,
    build: impl Fn(&Path, &Path, &Path) -> Command,
) -> Option<PathBuf> {
    std::fs::create_dir_all(out).expect("create the guest dir");
    let ScriptedApps {
        root,
        language,
        entry,
    } = apps;
    let project_wit = root.join("wit");
    let roots = [
        root.join("tests").join("fixtures").join(language),
        root.join("plugins").join(language),
        root.join(WRONG_WORLD),
    ];
    let mut dirs: Vec<PathBuf> = roots
        .iter()
        .filter_map(|apps| std::fs::read_dir(apps).ok())
        .flat_map(|entries| entries.filter_map(Result::ok).map(|e| e.path()))
        .collect();
    dirs.retain(|d| d.join(entry).exists());
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .expect("named")
            .to_string_lossy()
            .into_owned();
        let wit = wit_for(&dir, &project_wit);
        let mut inputs = shared.to_vec();
        collect_files(&wit, &mut inputs);
        collect_files(&dir, &mut inputs);
        inputs.retain(|p| !p.components().any(|c| c.as_os_str() == "__pycache__"));
        inputs.sort();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&version, &mut hasher);
        for input in &inputs {
            std::hash::Hash::hash(&input, &mut hasher);
            std::hash::Hash::hash(
                &std::fs::read(input).expect("read a guest input"),
                &mut hasher,
            );
        }
        let stamp = format!("{:016x}", std::hash::Hasher::finish(&hasher));
        let wasm = out.join(format!("{name}.wasm"));
        let stamp_path = out.join(format!("{name}.inputs"));
        if wasm.exists() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
            continue;
        }
        // A failed build must not leave an old stamp matching a new file.
        let _ = std::fs::remove_file(&stamp_path);
        let output = build(&dir, &wit, &wasm)
            .output()
            .unwrap_or_else(|e| panic!("building {}: {e}", dir.display()));
        if !output.status.success() {
            panic!(
                "building the plugin in {} failed:\n{}{}",
                dir.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::fs::write(&stamp_path, stamp).expect("write the build stamp");
    }
    Some(out.to_path_buf())
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
    let mut generated = String::from(
        "/// The dashboard's files: (path under /ui/, content type, bytes).\npub const UI_ASSETS: &[(&str, &str, &[u8])] = &[\n",
    );
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
            "--workspace",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("plugins").join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", guest_target);
    // What cargo sets for the host build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
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
