//! Plugins in languages beyond Rust, for the tests and benches. Python and
//! JavaScript components come built by host/build.rs ([`scripted`]). C and
//! Go ones are built the way an author builds them: the project (a fixture
//! or a plugin from `plugins/`, with the SDK and WIT copied in as `weft
//! plugin new` would) staged under the target dir and built with the real
//! `weft plugin build`, once per process ([`build`]). Without the
//! language's toolchain, `None` with a notice, or a failure where
//! `WEFT_REQUIRE_PLUGIN_TOOLCHAINS` is set (CI).
//!
//! [`contract_fixtures`] is every language's contract fixture, the list
//! the contract suite and the invoke bench share.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
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

/// The Python (`python`) or JavaScript (`js`) component `name` that
/// host/build.rs built, if their toolchain was there when it ran.
pub fn scripted(language: &str, name: &str) -> Option<Vec<u8>> {
    let dir = match language {
        "python" => env!("WEFT_PYTHON_GUEST_DIR"),
        "js" => env!("WEFT_JS_GUEST_DIR"),
        _ => panic!("{language} is not built by host/build.rs"),
    };
    if dir.is_empty() {
        missing(language, "not found when host/build.rs ran");
        return None;
    }
    Some(read(&format!("{dir}/{name}.wasm")))
}

/// (language, contract fixture component) for every language whose
/// toolchain is here: the Rust testkit and `tests/fixtures/<language>/
/// contract`, which share their modes and outputs.
pub fn contract_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![(
        "rust",
        read(&format!("{}/testkit.wasm", env!("WEFT_GUEST_DIR"))),
    )];
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
