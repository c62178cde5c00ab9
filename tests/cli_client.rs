//! The integrator's CLI (`weft workflow …`, `weft run …`) through the real
//! binary against a real `weft serve` with the testkit fixture.

use crate::common;

use std::time::{Duration, Instant};

use common::cli::{self, Output, weft_in};
use common::{ADMIN_KEY, Server, shared};
use serde_json::{Value, json};

fn weft(server: &Server, args: &[&str]) -> Output {
    cli::weft(server, ADMIN_KEY, args)
}

/// Applies and publishes a JSON definition through the CLI's stdin.
fn publish(server: &Server, definition: &Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = weft_in(
        server,
        dir.path(),
        Some(ADMIN_KEY),
        &["workflow", "apply", "-f", "-", "--publish"],
        Some(&definition.to_string()),
    );
    assert_eq!(out.code, 0, "{out:?}");
}

/// The run id from the `run <id> started …` line of `run start --wait`.
fn started_id(out: &Output) -> String {
    out.stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("run ")?
                .split_once(" started")
                .map(|(id, _)| id.to_owned())
        })
        .unwrap_or_else(|| panic!("no start line in {out:?}"))
}

fn get_run(server: &Server, id: &str) -> Value {
    let out = weft(server, &["run", "get", id]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn apply_creates_publishes_and_adds_draft_versions_from_yaml_and_stdin() {
    let s = shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hello.yaml"),
        "key: hello\nname: Hello\nsteps:\n  - id: greet\n    uses: testkit@0\n    config:\n      mode: echo\n",
    )
    .unwrap();
    let apply = ["workflow", "apply", "-f", "hello.yaml"];
    let out = weft_in(
        &s,
        dir.path(),
        Some(ADMIN_KEY),
        &[&apply[..], &["--publish"]].concat(),
        None,
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "published hello 0.1.0\n"),
        "{out:?}"
    );

    let out = weft_in(&s, dir.path(), Some(ADMIN_KEY), &apply, None);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "updated hello 0.2.0 (draft)\n"),
        "{out:?}"
    );

    // JSON on stdin, created without publishing.
    let definition = json!({"key": "hello_json", "name": "Hello", "steps": [{"id": "greet", "uses": "testkit@0"}]});
    let out = weft_in(
        &s,
        dir.path(),
        Some(ADMIN_KEY),
        &["workflow", "apply", "-f", "-"],
        Some(&definition.to_string()),
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "created hello_json 0.1.0 (draft)\n"),
        "{out:?}"
    );
}

#[test]
fn apply_of_an_invalid_definition_names_each_step_and_exits_1() {
    let s = shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.yml"),
        "key: broken\nname: Broken\nsteps:\n  - id: a\n    uses: testkit@0\n  - id: b\n    uses: testkit@0\n    depends_on: [nope]\n",
    )
    .unwrap();
    let out = weft_in(
        &s,
        dir.path(),
        Some(ADMIN_KEY),
        &["workflow", "apply", "-f", "broken.yml"],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.trim_start().starts_with("step b: ") && l.contains("nope")),
        "{out:?}"
    );
}

#[test]
fn run_start_wait_prints_step_progress_and_the_result() {
    let s = shared();
    publish(
        &s,
        &json!({"key": "pipeline", "name": "Pipeline", "steps": [
            {"id": "first", "uses": "testkit@0", "config": {"mode": "echo"}},
            {"id": "second", "uses": "testkit@0", "depends_on": ["first"], "config": {"mode": "sleep", "ms": 100}}]}),
    );
    let out = weft(
        &s,
        &[
            "run",
            "start",
            "pipeline",
            "--input",
            r#"{"n": 1}"#,
            "--wait",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let result: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(result.to_string().contains("slept_ms"), "{out:?}");
    let first = out
        .stderr
        .find("✓ first completed (")
        .expect("first's line");
    let second = out
        .stderr
        .find("✓ second completed (")
        .expect("second's line");
    assert!(first < second, "{out:?}");
    assert!(out.stderr.contains(" completed in "), "{out:?}");

    // Without --wait: the id and status, and the run can be read back.
    let out = weft(&s, &["run", "start", "pipeline", "--input", r#"{"n": 2}"#]);
    assert_eq!(out.code, 0, "{out:?}");
    let (id, status) = out.stdout.trim().split_once(' ').expect("id and status");
    assert!(["pending", "running"].contains(&status), "{out:?}");
    let run = get_run(&s, id);
    assert_eq!(run["id"], id);
    assert_eq!(run["input"], json!({"n": 2}));
}

#[test]
fn a_failed_run_exits_1_with_the_error() {
    let s = shared();
    publish(
        &s,
        &json!({"key": "doomed", "name": "Doomed", "steps": [
            {"id": "explode", "uses": "testkit@0", "config": {"mode": "fail", "kind": "fatal", "message": "boom"}}]}),
    );
    let out = weft(&s, &["run", "start", "doomed", "--wait"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("✗ explode failed: fatal: boom"),
        "{out:?}"
    );
    assert!(out.stderr.contains("--step explode"), "{out:?}");
}

#[test]
fn a_paused_run_exits_2_and_resumes_from_the_cli() {
    let s = shared();
    publish(
        &s,
        &json!({"key": "gate", "name": "Gate", "steps": [
            {"id": "approve", "uses": "request_user_action", "config": {"actions": ["approve", "decline"]}},
            {"id": "ship", "uses": "testkit@0", "depends_on": ["approve"], "config": {"mode": "echo"}}]}),
    );
    let out = weft(&s, &["run", "start", "gate", "--wait"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("⏸ approve paused (request_user_action)"),
        "{out:?}"
    );
    let id = started_id(&out);
    assert!(
        out.stderr.contains(&format!(
            "weft run resume {id} --step approve --action <approve|decline>"
        )),
        "{out:?}"
    );

    let out = weft(
        &s,
        &[
            "run", "resume", &id, "--step", "approve", "--action", "approve",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with(&format!("{id} ")), "{out:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let run = loop {
        let run = get_run(&s, &id);
        if run["status"] == "completed" || Instant::now() > deadline {
            break run;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(run["status"], "completed", "{run}");

    // A finished run is not resumable: the problem's detail, exit 1.
    let out = weft(
        &s,
        &[
            "run", "resume", &id, "--step", "approve", "--action", "approve",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("(409)"), "{out:?}");
}

#[test]
fn a_wait_that_times_out_exits_3_and_terminate_stops_the_run() {
    let s = shared();
    publish(
        &s,
        &json!({"key": "nap", "name": "Nap", "steps": [
            {"id": "doze", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 10000}}]}),
    );
    let out = weft(
        &s,
        &["run", "start", "nap", "--wait", "--timeout-secs", "1"],
    );
    assert_eq!(out.code, 3, "{out:?}");
    let id = started_id(&out);
    assert!(
        out.stderr.contains(&format!("run {id} is still")),
        "{out:?}"
    );

    let out = weft(&s, &["run", "terminate", &id, "--reason", "bored"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), format!("{id} terminated"), "{out:?}");
}

#[test]
fn without_a_key_the_cli_says_how_to_give_one() {
    let s = shared();
    let dir = tempfile::tempdir().unwrap();
    let out = weft_in(&s, dir.path(), None, &["run", "get", "nothing"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("(401)") && out.stderr.contains("--key"),
        "{out:?}"
    );

    // The local server's key file is the fallback.
    std::fs::create_dir(dir.path().join("weft-data")).unwrap();
    std::fs::write(
        dir.path().join("weft-data/admin-key"),
        format!("{ADMIN_KEY}\n"),
    )
    .unwrap();
    let out = weft_in(&s, dir.path(), None, &["run", "get", "nothing"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("(404)"), "{out:?}");
}

#[test]
fn tasks_are_listed_reminded_reassigned_and_revoked_from_the_cli() {
    let s = shared();
    publish(
        &s,
        &json!({"key": "cli-task", "name": "CLI task", "steps": [
            {"id": "approve", "uses": "request_user_action",
             "config": {"actions": ["approve"], "assignees": ["ann@example.com"], "title": "Approve it"}}]}),
    );
    let out = weft(&s, &["run", "start", "cli-task"]);
    assert_eq!(out.code, 0, "{out:?}");
    let run = out.stdout.split_whitespace().next().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let out = weft(&s, &["task", "list", "--run", &run]);
        assert_eq!(out.code, 0, "{out:?}");
        if let Some(line) = out.stdout.lines().next() {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no task for run {run}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = line.split_whitespace().next().unwrap().to_owned();
    assert!(
        line.ends_with("open ann@example.com cli-task/approve Approve it"),
        "{line}"
    );
    let out = weft(&s, &["task", "remind", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\"reminders_sent\": 1"), "{out:?}");
    let out = weft(&s, &["task", "reassign", &id, "--to", "ben@example.com"]);
    assert_eq!(out.code, 0, "{out:?}");
    let new: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(new["assignee"], "ben@example.com");
    assert!(new["link"].as_str().unwrap().contains("/t/"), "{new}");
    let out = weft(&s, &["task", "revoke", new["id"].as_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = weft(&s, &["task", "list", "--run", &run, "--status", "revoked"]);
    assert_eq!(out.stdout.lines().count(), 2, "{out:?}");
    // Revoking again names the problem.
    let out = weft(&s, &["task", "revoke", &id]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("only open or viewed tasks"), "{out:?}");
}

#[test]
fn runs_are_labelled_listed_rerun_and_retried_from_the_cli() {
    let s = shared();
    publish(
        &s,
        &json!({"key": "cli-labels", "name": "CLI labels", "steps": [
            {"id": "first", "uses": "testkit@0", "config": {"mode": "echo"}},
            {"id": "second", "uses": "testkit@0", "depends_on": ["first"],
             "config": {"mode": "{{input.mode}}", "ms": "{{input.ms?}}"}, "retry": {"max_attempts": 1}}]}),
    );
    let out = weft(
        &s,
        &[
            "run",
            "start",
            "cli-labels",
            "--input",
            r#"{"mode": "fail"}"#,
            "--label",
            "customer:c-7",
            "--label",
            "case:x",
            "--wait",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    let id = started_id(&out);
    let out = weft(
        &s,
        &[
            "run",
            "list",
            "--label",
            "customer:c-7",
            "--label",
            "case:x",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let line = out.stdout.lines().next().expect("a run");
    assert!(
        line.starts_with(&format!("{id} failed cli-labels@")),
        "{line}"
    );
    assert!(line.ends_with("case:x,customer:c-7"), "{line}");
    let out = weft(&s, &["run", "list", "--label", "customer:c-8"]);
    assert_eq!(out.stdout, "", "{out:?}");
    let out = weft(&s, &["run", "list", "--label", "customer"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("name:value"), "{out:?}");

    // Re-run from the failing step with input that works.
    let out = weft(
        &s,
        &[
            "run",
            "rerun",
            &id,
            "--from-step",
            "second",
            "--input",
            r#"{"mode": "echo"}"#,
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let new = out.stdout.split_whitespace().next().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let run = loop {
        let run = get_run(&s, &new);
        if run["status"] == "completed" {
            break run;
        }
        assert!(Instant::now() < deadline, "{run}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(run["rerun_of"], id.as_str());
    assert_eq!(run["labels"]["customer"], "c-7");

    // Paused and unpaused by hand.
    let out = weft(
        &s,
        &[
            "run",
            "start",
            "cli-labels",
            "--input",
            r#"{"mode": "sleep", "ms": 3000}"#,
        ],
    );
    let other = out.stdout.split_whitespace().next().unwrap().to_owned();
    let out = weft(&s, &["run", "pause", &other, "--reason", "incident"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("(paused by an operator)"), "{out:?}");
    let out = weft(&s, &["run", "unpause", &other]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("paused by"), "{out:?}");

    // The original is still failed: retried by the bulk command it fails
    // again (its input still says fail), and the count says so.
    let out = weft(&s, &["run", "retry-failed", "--workflow", "cli-labels"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("retried 1"), "{out:?}");
}
