//! The raw wasmtime floor for the benchmark: instantiate from an
//! `InstancePre` and call `run`, on the runtime's own engine, with nothing
//! of ours in the way (no WASI context, no limits, no services; imports the
//! call does not use trap). Not for production use.

use wasmtime::Store;
use wasmtime::component::Linker;

use super::bindings::StepPluginPre;
use super::bindings::weft::plugin::types::StepContext;
use super::{LoadError, Runtime};

/// Store data of the floor: nothing.
pub struct Bare;

#[doc(hidden)]
pub struct Floor {
    pre: StepPluginPre<Bare>,
    engine: wasmtime::Engine,
}

impl Floor {
    pub fn new(runtime: &Runtime, bytes: &[u8]) -> Result<Self, LoadError> {
        let engine = runtime.engine.clone();
        let component =
            wasmtime::component::Component::new(&engine, bytes).map_err(LoadError::engine)?;
        let mut linker: Linker<Bare> = Linker::new(&engine);
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(LoadError::engine)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(LoadError::engine)?;
        let pre = StepPluginPre::new(pre).map_err(LoadError::engine)?;
        Ok(Self { pre, engine })
    }

    /// One fresh instance and one `run` call; the output or a description of
    /// the failure.
    pub async fn call(&self, config: &str, input: &str) -> Result<String, String> {
        let mut store = Store::new(&self.engine, Bare);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| e.to_string())?;
        let context = StepContext {
            tenant: "bench".into(),
            run_id: "run".into(),
            step_id: "step".into(),
            attempt: 1,
            idempotency_key: "run/step".into(),
        };
        instance
            .weft_plugin_step()
            .call_run(&mut store, &context, config, input)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:?}"))
    }
}
