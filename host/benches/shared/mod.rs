//! What the bench binaries share.

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
