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
    let root = root();
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
    copy_dir(&root.join(project), &stage);
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
    let output = stage.with_extension("wasm");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["plugin", "build", "--lang", lang])
        .arg(&stage)
        .arg("-o")
        .arg(&output)
        .output()
        .expect("run weft plugin build");
    let stderr = String::from_utf8_lossy(&run.stderr);
    if !run.status.success() {
        let missing = stderr.contains("no clang found")
            || stderr.contains("no WASI sysroot")
            || (lang == "go" && stderr.contains("could not run"));
        assert!(
            missing,
            "weft plugin build {project} failed:\n{}{stderr}",
            String::from_utf8_lossy(&run.stdout)
        );
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
    Some(std::fs::read(&output).unwrap())
}
