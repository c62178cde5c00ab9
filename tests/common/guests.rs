//! The plugins the tests and benches run, built where they are needed
//! (host/build.rs builds only the built-in plugins the binary embeds):
//! - the Rust guest workspace (`plugins/`: the built-ins and the Rust test
//!   fixtures such as `testkit`) for wasm32-wasip2 in one cargo invocation,
//!   once per process ([`dir`]);
//! - Python and JavaScript components (`tests/fixtures/{python,js}/*`,
//!   `plugins/{python,js}/*` and the wrong-world fixtures) with
//!   componentize-py and componentize-js, skipped when their inputs are
//!   unchanged since the last build ([`scripted`]);
//! - C and Go ones the way an author builds them: the project (a fixture
//!   or a plugin from `plugins/`, with the SDK and WIT copied in as `weft
//!   plugin new` would) staged under the target dir and built with the real
//!   `weft plugin build`, once per process ([`build`]).
//!
//! Without a language's toolchain, `None` with a notice, or a failure where
//! `WEFT_REQUIRE_PLUGIN_TOOLCHAINS` is set (CI).
//!
//! [`contract_fixtures`] is every language's contract fixture, the list
//! the contract suite and the invoke bench share.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Where the guest workspace builds (host/build.rs builds the built-ins
/// there too, so the two share their dependencies).
fn guest_target() -> PathBuf {
    PathBuf::from(env!("WEFT_GUEST_TARGET"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
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

/// A language's toolchain is missing: a notice, or a failure in CI.
fn missing(language: &str, why: &str) {
    assert!(
        std::env::var_os("WEFT_REQUIRE_PLUGIN_TOOLCHAINS").is_none(),
        "WEFT_REQUIRE_PLUGIN_TOOLCHAINS is set but the {language} toolchain is missing: {why}"
    );
    eprintln!("NOTICE: no {language} toolchain ({why}); its checks are skipped");
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The directory of the Rust guest workspace's components (`<name>.wasm`
/// for every built-in plugin and Rust fixture), built on the first call.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = guest_target();
        let mut command = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        command
            .args([
                "build",
                "--release",
                "--workspace",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root().join("plugins").join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target);
        // Flags meant for the host must not reach the guest build.
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTC_WRAPPER",
            "CARGO_BUILD_TARGET",
            "CARGO_BUILD_BUILD_DIR",
        ] {
            command.env_remove(var);
        }
        let output = command.output().expect("run cargo for the guest workspace");
        assert!(
            output.status.success(),
            "building the guest workspace in plugins/ for wasm32-wasip2 failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        target.join("wasm32-wasip2").join("release")
    })
}

/// The Rust component `name` (a built-in plugin or a fixture).
pub fn rust(name: &str) -> Vec<u8> {
    read(&path(name).display().to_string())
}

/// Where the Rust component `name` is.
pub fn path(name: &str) -> PathBuf {
    dir().join(format!("{name}.wasm"))
}

/// The Python (`python`) or JavaScript (`js`) component `name`; `None`
/// when the language's toolchain is missing and not required.
pub fn scripted(language: &str, name: &str) -> Option<Vec<u8>> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    static JS: OnceLock<Option<PathBuf>> = OnceLock::new();
    let dir = match language {
        "python" => PYTHON.get_or_init(|| build_python(&guest_target().join("python"))),
        "js" => JS.get_or_init(|| build_js(&guest_target().join("js"))),
        _ => panic!("{language} is not a scripted language"),
    };
    let Some(dir) = dir else {
        missing(
            language,
            "componentize-py or componentize-js is not installed (scripts/toolchains installs them)",
        );
        return None;
    };
    Some(read(&format!("{}/{name}.wasm", dir.display())))
}

/// componentize-py: `WEFT_COMPONENTIZE_PY`, or on the PATH; with its version.
fn componentize_py() -> Option<(PathBuf, String)> {
    let program = std::env::var_os("WEFT_COMPONENTIZE_PY")
        .map_or_else(|| PathBuf::from("componentize-py"), PathBuf::from);
    let output = Command::new(&program).arg("--version").output().ok()?;
    output.status.success().then(|| {
        (
            program,
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        )
    })
}

/// Builds every Python app into `<out>/<name>.wasm` with the Python SDK.
/// `None` without componentize-py.
fn build_python(out: &Path) -> Option<PathBuf> {
    let (program, version) = componentize_py()?;
    let sdk = root().join("sdk").join("python");
    let mut shared = Vec::new();
    collect_files(&sdk.join("weft_sdk"), &mut shared);
    let stage = out.join("stage");
    build_scripted(
        "python",
        "app.py",
        &shared,
        &version,
        out,
        |dir, wit, wasm| {
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
        },
    )
}

/// Builds every JavaScript app into `<out>/<name>.wasm` with
/// componentize-js (`sdk/js`, its packages installed by
/// scripts/toolchains), the SDK copied beside the app. `None` without them.
fn build_js(out: &Path) -> Option<PathBuf> {
    let js = root().join("sdk").join("js");
    let installed = js
        .join("node_modules")
        .join("@bytecodealliance")
        .join("componentize-js")
        .join("package.json");
    let package = std::fs::read_to_string(&installed).ok()?;
    let node = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let version = format!("{package}{}", String::from_utf8_lossy(&node.stdout));
    let sdk = js.join("weft-sdk.js");
    let shared = [sdk.clone(), js.join("build.mjs")];
    let stage = out.join("stage");
    build_scripted("js", "app.js", &shared, &version, out, |dir, wit, wasm| {
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

/// Builds each app of `language` (every directory holding `entry` under
/// `tests/fixtures/<language>`, `plugins/<language>` and the wrong-world
/// fixtures) into `<out>/<name>.wasm` with the command `build(dir, wit,
/// wasm)` gives, `wit` being the package the app builds against (a `wit`
/// beside its directory, as for the wrong-world fixtures, else the
/// project's), unless its inputs (the app, that WIT, `shared`, the
/// toolchain `version`) are unchanged since the last build: a Python or
/// JavaScript component takes seconds.
fn build_scripted(
    language: &str,
    entry: &str,
    shared: &[PathBuf],
    version: &str,
    out: &Path,
    build: impl Fn(&Path, &Path, &Path) -> Command,
) -> Option<PathBuf> {
    std::fs::create_dir_all(out).expect("create the guest dir");
    let root = root();
    let project_wit = root.join("wit");
    let apps = [
        root.join("tests").join("fixtures").join(language),
        root.join("plugins").join(language),
        root.join("tests").join("fixtures").join("wrong_world"),
    ];
    let mut dirs: Vec<PathBuf> = apps
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
        let wit = dir
            .parent()
            .map(|parent| parent.join("wit"))
            .filter(|own| own.is_dir())
            .unwrap_or_else(|| project_wit.clone());
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
        assert!(
            output.status.success(),
            "building the plugin in {} failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&stamp_path, stamp).expect("write the build stamp");
    }
    Some(out.to_path_buf())
}

/// (language, contract fixture component) for every language whose
/// toolchain is here: the Rust testkit and `tests/fixtures/<language>/
/// contract`, which share their modes and outputs.
pub fn contract_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("rust", rust("testkit"))];
    for language in ["python", "js"] {
        if let Some(bytes) = scripted(language, "contract") {
            out.push((language, bytes));
        }
    }
    for language in ["c", "go"] {
        if let Some(bytes) = build(language, &format!("tests/fixtures/{language}/contract")) {
            out.push((language, bytes));
        }
    }
    out
}

static BUILT: Mutex<Option<HashMap<String, Option<Vec<u8>>>>> = Mutex::new(None);

/// The component built from the project at `project` (relative to the
/// repository root, e.g. `tests/fixtures/go/contract`) in `lang` (`c` or
/// `go`); `None` when the toolchain is missing and not required.
pub fn build(lang: &str, project: &str) -> Option<Vec<u8>> {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(bytes) = built.get(project) {
        return bytes.clone();
    }
    let bytes = build_now(lang, project);
    built.insert(project.to_owned(), bytes.clone());
    bytes
}

fn build_now(lang: &str, project: &str) -> Option<Vec<u8>> {
    let (run, output) = stage_and_build(lang, project)?;
    assert!(
        run.status.success(),
        "weft plugin build {project} failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    Some(read(&output.display().to_string()))
}

/// A project built for the wrong world (its WIT beside it, as in
/// `tests/fixtures/wrong_world`): `weft plugin build` writes the component
/// and then fails, because the host refuses it; the component and what
/// the build said.
pub fn refused(lang: &str, project: &str) -> Option<(Vec<u8>, String)> {
    let (run, output) = stage_and_build(lang, project)?;
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        !run.status.success() && stderr.contains("the host refuses it"),
        "weft plugin build {project} should have been refused: {run:?}"
    );
    Some((read(&output.display().to_string()), stderr))
}

/// Stages the project and runs `weft plugin build` on it: its output and
/// where the component goes; `None` when the toolchain is missing.
fn stage_and_build(lang: &str, project: &str) -> Option<(std::process::Output, PathBuf)> {
    let root = root();
    let source = root.join(project);
    let name = Path::new(project).file_name().unwrap().to_string_lossy();
    let stage = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("guests")
        .join(format!(
            "{}-{}",
            std::process::id(),
            project.replace('/', "_")
        ))
        .join(name.as_ref());
    let _ = std::fs::remove_dir_all(&stage);
    copy_dir(&source, &stage);
    // A WIT package beside the project is its own (the wrong-world
    // fixtures, which use no SDK); otherwise the project's, with the SDK.
    let own_wit = source.parent().unwrap().join("wit");
    if own_wit.is_dir() {
        copy_dir(&own_wit, &stage.join("wit"));
    } else {
        copy_dir(&root.join("wit"), &stage.join("wit"));
        let sdk = root.join("sdk").join(lang);
        match lang {
            "c" => {
                for file in ["weft.h", "weft.c"] {
                    std::fs::copy(sdk.join(file), stage.join(file)).unwrap();
                }
            }
            "go" => {
                for dir in ["weft", "export_weft_plugin_step"] {
                    copy_dir(&sdk.join(dir), &stage.join(dir));
                }
                if !stage.join("go.mod").exists() {
                    std::fs::copy(sdk.join("template/go.mod"), stage.join("go.mod")).unwrap();
                }
            }
            _ => panic!("no staged build for {lang}"),
        }
    }
    let output = stage.with_extension("wasm");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["plugin", "build", "--lang", lang])
        .arg(&stage)
        .arg("-o")
        .arg(&output)
        .output()
        .expect("run weft plugin build");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let toolchain_missing = !run.status.success()
        && (stderr.contains("no clang found")
            || stderr.contains("no WASI sysroot")
            || (lang == "go" && stderr.contains("could not run")));
    if toolchain_missing {
        missing(lang, stderr.trim());
        return None;
    }
    Some((run, output))
}
