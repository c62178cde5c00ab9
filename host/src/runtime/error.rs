//! Why loading a component or running an attempt failed, typed so the
//! engine can decide on retries and the API can name the reason.

use std::time::Duration;

use super::bindings::weft::plugin::types::StepError;

/// Raised from the epoch callback when an attempt passes its deadline.
#[derive(Debug)]
pub(crate) struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    #[error("timed out after {} ms", limit.as_millis())]
    Timeout { limit: Duration },
    #[error("exceeded the memory limit of {limit} bytes")]
    MemoryLimit { limit: u64 },
    #[error("stack overflow (unbounded recursion?)")]
    StackOverflow,
    #[error("the plugin trapped: {message}")]
    Trap { message: String },
    #[error("the output is {size} bytes, over the limit of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("invalid output: {reason}")]
    InvalidOutput { reason: String },
    /// The plugin reported a transient failure.
    #[error("{0}")]
    Retryable(String),
    /// The plugin reported a permanent failure.
    #[error("{0}")]
    Fatal(String),
    /// The plugin rejected its config or input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl AttemptError {
    /// A stable, machine-readable name for the reason.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Trap { .. } => "trap",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::InvalidOutput { .. } => "invalid_output",
            Self::Retryable(_) => "retryable",
            Self::Fatal(_) => "fatal",
            Self::InvalidInput(_) => "invalid_input",
        }
    }

    /// Whether another attempt might succeed. Traps, limits and the
    /// plugin's own fatal errors are deterministic; timeouts and
    /// retryable errors may not be.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Retryable(_) => true,
            Self::MemoryLimit { .. }
            | Self::StackOverflow
            | Self::Trap { .. }
            | Self::OutputTooLarge { .. }
            | Self::InvalidOutput { .. }
            | Self::Fatal(_)
            | Self::InvalidInput(_) => false,
        }
    }
}

impl From<StepError> for AttemptError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Retryable(m) => Self::Retryable(m),
            StepError::Fatal(m) => Self::Fatal(m),
            StepError::InvalidInput(m) => Self::InvalidInput(m),
        }
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component at all.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// A component, but not of the `weft:plugin` world: names the missing or
    /// mismatched import or export.
    #[error("the component does not fit the weft:plugin/step-plugin world: {0}")]
    WrongWorld(String),
    /// `describe()` failed.
    #[error("describe() failed: {0}")]
    Describe(AttemptError),
    /// `describe()` returned something unusable.
    #[error("describe() returned invalid plugin info: {0}")]
    InvalidInfo(String),
    #[error("compiled-component cache: {0}")]
    Cache(String),
    #[error("wasmtime engine: {0}")]
    Engine(String),
}

impl LoadError {
    pub(crate) fn engine(e: wasmtime::Error) -> Self {
        Self::Engine(format!("{e:#}"))
    }
}
