//! What the bench binaries share.

#![allow(dead_code, reason = "each bench uses a different part")]

use serde_json::{Value, json};
use weft::runtime::services::MemoryServices;
use weft::runtime::{Grants, Invocation, Limits, StepContext};

/// One attempt of the bench's step, with default grants and limits.
pub fn invocation<'a>(config: &'a str, input: &'a str, memory: &MemoryServices) -> Invocation<'a> {
    Invocation {
        context: StepContext {
            tenant: "bench".into(),
            run_id: "run".into(),
            step_id: "step".into(),
            attempt: 1,
            idempotency_key: "run/step".into(),
        },
        config,
        input,
        grants: Grants::default(),
        services: memory.services(),
        limits: Limits::DEFAULT,
    }
}

/// The steps of the benchmark workflow: `n` testkit steps in `echo` mode,
/// each depending on the one before.
pub fn linear_steps(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut step =
                json!({"id": format!("s{i}"), "uses": "testkit@0", "config": {"mode": "echo"}});
            if i > 0 {
                step["depends_on"] = json!([format!("s{}", i - 1)]);
            }
            step
        })
        .collect()
}

/// The value of `series` (a metric's name and labels, as printed) in the
/// `/metrics` of the host at `url`; none when it is not there.
pub async fn metric(client: &reqwest::Client, url: &str, series: &str) -> Option<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
}
