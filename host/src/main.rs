//! The `weft` binary: see `weft --help`.

use clap::Parser;

/// mimalloc gives memory back to the system soon after it is freed (glibc's
/// allocator keeps what thousands of closed connections used), and is
/// quicker on the engine's small, short-lived allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = weft::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The trace exporter, if any, is a task on this runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        match weft::cli::init_tracing(&cli) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    };
    let code = match runtime.block_on(weft::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // The spans still buffered go out before the runtime stops.
    if let Some(guard) = telemetry {
        guard.shutdown();
    }
    code
}
