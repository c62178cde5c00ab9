//! A real SMTP server for the mail tests: Python's `aiosmtpd` (PyPI),
//! installed once into a virtualenv under `<target dir>/toolchains`, running
//! `tests/fixtures/smtp/relay.py`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const AIOSMTPD_VERSION: &str = "1.4.6";

/// The virtualenv's Python with aiosmtpd, installed on first use (into a
/// temporary directory renamed into place, so parallel tests never see a
/// half-made one).
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    // <target>/<profile>/weft
                    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
                        .ancestors()
                        .nth(2)
                        .expect("the target directory")
                        .to_path_buf()
                });
            let toolchains = std::path::absolute(target.join("toolchains")).expect("path");
            let venv = toolchains.join(format!("aiosmtpd-{AIOSMTPD_VERSION}"));
            let python = venv.join("bin/python");
            if python.exists() {
                return python;
            }
            std::fs::create_dir_all(&toolchains).expect("toolchains dir");
            let staging = toolchains.join(format!(
                "aiosmtpd-{AIOSMTPD_VERSION}.{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&staging);
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&staging)
                .status()
                .is_ok_and(|s| s.success())
                && Command::new(staging.join("bin/pip"))
                    .args(["install", "-q", &format!("aiosmtpd=={AIOSMTPD_VERSION}")])
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(
                ok,
                "could not install aiosmtpd {AIOSMTPD_VERSION} from PyPI"
            );
            // Another process may have won the race: either copy will do.
            if std::fs::rename(&staging, &venv).is_err() {
                let _ = std::fs::remove_dir_all(&staging);
            }
            python
        })
        .clone()
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// aiosmtpd listening on `port`; stopped when dropped.
pub struct Relay {
    child: Child,
    received: mpsc::Receiver<String>,
    bodies: mpsc::Receiver<String>,
}

impl Relay {
    pub fn start(port: u16) -> Self {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smtp/relay.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start aiosmtpd");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok);
        assert_eq!(first.as_deref(), Some("ready"), "aiosmtpd did not start");
        let (tx, received) = mpsc::channel();
        let (body_tx, bodies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("received ") {
                    let _ = tx.send(rest.to_owned());
                } else if let Some(rest) = line.strip_prefix("body ") {
                    let body: String = serde_json::from_str(rest).unwrap_or_default();
                    let _ = body_tx.send(body);
                }
            }
        });
        Self {
            child,
            received,
            bodies,
        }
    }

    /// The next message received (`<Message-ID> <recipients>`), waiting up
    /// to `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.received.recv_timeout(timeout).ok()
    }

    /// The decoded text of the next message received, as a mail client
    /// would show it (the messages' bodies arrive in order, separately
    /// from [`Self::next`]).
    pub fn next_body(&self, timeout: Duration) -> Option<String> {
        self.bodies.recv_timeout(timeout).ok()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}
