//! The `weft` CLI as a user runs it, against a test server.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Server, weft_bin};

/// What a `weft` command printed, and how it exited.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Exit code, stdout and stderr in one text, for messages and
    /// searches.
    pub fn text(&self) -> String {
        format!("{self:?}")
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `weft <args>` in `dir` against `server`, with `key` as WEFT_KEY
/// (none: no key) and `stdin` if given.
pub fn weft_in(
    server: &Server,
    dir: &Path,
    key: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut command = Command::new(weft_bin());
    command
        .args(args)
        .current_dir(dir)
        .env("WEFT_URL", &server.url)
        .env_remove("WEFT_KEY")
        .env_remove("WEFT_DATA_DIR")
        .env("RUST_LOG", "warn");
    if let Some(key) = key {
        command.env("WEFT_KEY", key);
    }
    run(command, stdin)
}

/// Runs `weft <args>` that needs no server (`weft plugin pull`, say) in an
/// empty directory, with `env` set.
pub fn weft_alone(env: &[(&str, &OsStr)], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(weft_bin());
    command
        .args(args)
        .current_dir(dir.path())
        .env_remove("WEFT_URL")
        .env_remove("WEFT_KEY")
        .env_remove("WEFT_DATA_DIR")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    run(command, None)
}

fn run(mut command: Command, stdin: Option<&str>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn weft");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for weft");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `weft <args>` against `server` with `key` as WEFT_KEY, in an empty
/// directory (so no admin-key file is picked up).
pub fn weft(server: &Server, key: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    weft_in(server, dir.path(), Some(key), args, None)
}
