//! Per-attempt cost of the sandbox: the raw wasmtime floor (instantiate
//! from `InstancePre` plus one `run` call) against one attempt through
//! `Runtime::invoke` (fresh store, empty WASI, limits, services, output
//! check), both on the same engine and the same trivial component (the
//! testkit fixture in `echo` mode).
//!
//! Then, per guest language (the Rust testkit and the Python, JavaScript,
//! C and Go contract fixtures, where their toolchains built them):
//! component size, compile time at upload, load time after a restart (the
//! serialized artifact from the disk cache), and one echo attempt through
//! `Runtime::invoke`.
//!
//! Run: `cargo bench --bench invoke` (prints µs per call and the ratio).

#![allow(clippy::print_stdout, reason = "a bench binary prints its figures")]

use std::time::Instant;

#[path = "../../tests/common/guests.rs"]
mod guests;
mod shared;

use shared::invocation;
use weft::runtime::floor::Floor;
use weft::runtime::services::MemoryServices;
use weft::runtime::{Runtime, RuntimeConfig};

const WARMUP: usize = 500;
const ROUNDS: usize = 5;
const CALLS: usize = 2_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let path = guests::path("testkit");
    let bytes = guests::rust("testkit");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let plugin = runtime.load(&bytes).await.expect("load");
    let floor = Floor::new(&runtime, &bytes).expect("floor");
    let memory = MemoryServices::default();
    let config = r#"{"mode":"echo"}"#;
    let input = r#"{"invoice":"inv-1","amount":12.5}"#;

    let invoke = || async {
        let attempt = runtime
            .invoke(&plugin, invocation(config, input, &memory))
            .await;
        assert_eq!(attempt.result.as_deref(), Ok(input));
    };
    let raw = || async {
        assert_eq!(floor.call(config, input).await.as_deref(), Ok(input));
    };

    for _ in 0..WARMUP {
        raw().await;
        invoke().await;
    }
    // Interleaved rounds so drift on a shared machine hits both alike; the
    // best round of each is reported.
    let (mut best_raw, mut best_invoke) = (f64::MAX, f64::MAX);
    for round in 1..=ROUNDS {
        let started = Instant::now();
        for _ in 0..CALLS {
            raw().await;
        }
        let raw_us = started.elapsed().as_secs_f64() * 1e6 / CALLS as f64;
        let started = Instant::now();
        for _ in 0..CALLS {
            invoke().await;
        }
        let invoke_us = started.elapsed().as_secs_f64() * 1e6 / CALLS as f64;
        println!("round {round}: floor {raw_us:.1} µs/call, invoke {invoke_us:.1} µs/call");
        best_raw = best_raw.min(raw_us);
        best_invoke = best_invoke.min(invoke_us);
    }
    println!("component: {} ({} bytes)", path.display(), bytes.len());
    println!("(a) raw floor (instantiate from InstancePre + run): {best_raw:.1} µs/call");
    println!("(b) Runtime::invoke (one attempt):                  {best_invoke:.1} µs/call");
    println!("ratio (b)/(a): {:.2}", best_invoke / best_raw);
    println!();
    languages().await;
    transform(&runtime, &memory).await;
}

/// The built-in `transform` step (a jq program through jaq) against the
/// testkit's echo, one attempt each on the same runtime.
async fn transform(runtime: &Runtime, memory: &MemoryServices) {
    let echo = runtime
        .load(&guests::rust("testkit"))
        .await
        .expect("load testkit");
    let transform = runtime
        .load(&guests::rust("transform"))
        .await
        .expect("load transform");
    let data = r#"{"invoices":[{"id":"inv-1","amount":12.5,"overdue":true},{"id":"inv-2","amount":40,"overdue":false}]}"#;
    let expression = format!(
        r#"{{"expression":"[.invoices[] | select(.overdue) | .amount] | add","data":{data}}}"#
    );
    let echo_config = r#"{"mode":"echo"}"#.to_owned();
    let time = |plugin, config: String| async move {
        let run = || async {
            let attempt = runtime
                .invoke(plugin, invocation(&config, data, memory))
                .await;
            assert!(attempt.result.is_ok(), "{:?}", attempt.result);
        };
        for _ in 0..50 {
            run().await;
        }
        let calls = 500;
        let started = Instant::now();
        for _ in 0..calls {
            run().await;
        }
        started.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
    };
    let echo_us = time(&echo, echo_config).await;
    let transform_us = time(&transform, expression).await;
    println!(
        "transform attempt: {transform_us:.0} µs; testkit echo: {echo_us:.0} µs ({:.1}x)",
        transform_us / echo_us
    );
}

async fn languages() {
    let fixtures = guests::contract_fixtures();
    println!("language | size | compile at upload | load after restart | echo attempt");
    for (language, bytes) in fixtures {
        let cache = tempfile::tempdir().expect("tempdir");
        let config = || RuntimeConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            ..RuntimeConfig::default()
        };
        let started = Instant::now();
        let runtime = Runtime::new(config()).expect("runtime");
        runtime.load(&bytes).await.expect("load");
        let compile = started.elapsed();
        // A restarted host: a new runtime, the artifact on disk.
        let restarted = Runtime::new(config()).expect("runtime");
        let started = Instant::now();
        let plugin = restarted.load(&bytes).await.expect("reload");
        let reload = started.elapsed();
        let memory = MemoryServices::default();
        let attempt = || async {
            let attempt = restarted
                .invoke(
                    &plugin,
                    invocation(r#"{"mode":"echo"}"#, r#"{"n":1}"#, &memory),
                )
                .await;
            assert!(attempt.result.is_ok(), "{language}: {:?}", attempt.result);
        };
        for _ in 0..20 {
            attempt().await;
        }
        let calls = 300;
        let started = Instant::now();
        for _ in 0..calls {
            attempt().await;
        }
        let per_call = started.elapsed().as_secs_f64() * 1e6 / f64::from(calls);
        println!(
            "{language} | {:.1} MB | {:.2} s | {:.1} ms | {per_call:.0} µs",
            bytes.len() as f64 / 1e6,
            compile.as_secs_f64(),
            reload.as_secs_f64() * 1e3,
        );
    }
}
