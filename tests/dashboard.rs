//! The dashboard in a real browser: headless Chromium, driven by
//! playwright-core from `ui/e2e/dashboard.test.mjs`, against a real
//! `weft serve` with the built-in plugins only (the test uploads testkit
//! through the UI). Screenshots land in `<target>/dashboard-screenshots`
//! (or `WEFT_SCREENSHOTS`).
//!
//! Without Chromium the test is skipped with a notice, unless
//! `WEFT_REQUIRE_BROWSER` is set (CI sets it), when it fails.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ADMIN_KEY, Server};

fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("WEFT_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from));
    candidates.into_iter().find(|p| p.exists())
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("WEFT_REQUIRE_BROWSER").is_none(),
            "Chromium is missing (install Debian's `chromium` package or set WEFT_CHROMIUM)"
        );
        eprintln!(
            "NOTICE: skipping the browser tests: no Chromium (install Debian's `chromium` package or set WEFT_CHROMIUM)"
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let screenshots = std::env::var_os("WEFT_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // <target>/<profile>/deps/dashboard-… → <target>/dashboard-screenshots
            let exe = std::env::current_exe().expect("test binary path");
            exe.ancestors()
                .nth(3)
                .expect("target dir")
                .join("dashboard-screenshots")
        });
    let dir = tempfile::tempdir().expect("tempdir");
    // The webhook screen posts to 127.0.0.1, which serve refuses by default.
    let mut server = Server::start_with(dir.path(), false, &["--webhook-allow-private-networks"]);
    let testkit = common::guests::path("testkit");
    let status = Command::new("node")
        .args(["--test", "--test-reporter=spec", "--test-concurrency=1"])
        .arg(root.join("ui/e2e/dashboard.test.mjs"))
        .current_dir(root.join("ui"))
        .env("WEFT_URL", &server.url)
        .env("WEFT_ADMIN_KEY", ADMIN_KEY)
        .env("WEFT_TESTKIT", &testkit)
        .env("WEFT_SCREENSHOTS", &screenshots)
        .env("WEFT_CHROMIUM", &chromium)
        .status()
        .expect("run node (Node.js 20.19+ is needed for the dashboard)");
    server.kill();
    assert!(
        status.success(),
        "the browser tests failed (their output is above)"
    );
    eprintln!("screenshots in {}", screenshots.display());
}
