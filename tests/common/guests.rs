//! C and Go plugins, built for the tests and benches the way an author
//! builds them: the project (a fixture or a plugin from `plugins/`, with
//! the SDK and WIT copied in as `weft plugin new` would) staged under the
//! target dir and built with the real `weft plugin build`. Built once per
//! process. Without the language's toolchain, `None` with a notice, or a
//! failure where `WEFT_REQUIRE_PLUGIN_TOOLCHAINS` is set (CI).

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
    Some(std::fs::read(&output).unwrap())
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
    Some((std::fs::read(&output).unwrap(), stderr))
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
    let missing = !run.status.success()
        && (stderr.contains("no clang found")
            || stderr.contains("no WASI sysroot")
            || (lang == "go" && stderr.contains("could not run")));
    if missing {
        assert!(
            std::env::var_os("WEFT_REQUIRE_PLUGIN_TOOLCHAINS").is_none(),
            "WEFT_REQUIRE_PLUGIN_TOOLCHAINS is set but the {lang} toolchain is missing:\n{stderr}"
        );
        eprintln!(
            "NOTICE: no {lang} toolchain ({}); its checks are skipped",
            stderr.trim()
        );
        return None;
    }
    Some((run, output))
}
