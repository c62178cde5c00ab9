//! # Weft: a workflow host whose step types are sandboxed WebAssembly components
//!
//! # Layout
//!
//! - [`runtime`]: the wasmtime sandbox. Loads components of the
//!   `weft:plugin` world and runs one attempt at a time with limits.
//! - [`builtins`]: the plugins compiled from `plugins/` and embedded in the
//!   binary.
//! - [`mail`]: SMTP delivery of outbox messages (lettre).
//! - [`egress`]: the operator's policy on which addresses outbound
//!   connections (plugins' HTTP, webhooks) may reach.
//! - [`telemetry`]: traces over OTLP, off unless an endpoint is set.
//! - [`oci`]: plugins as OCI artifacts (push, pull, registry credentials).
//! - [`cli`]: the `weft` command line.
//!
//! Dependencies point one way: `cli` → `runtime`; only `runtime` imports
//! wasmtime.

pub mod api;
pub mod builtins;
pub mod cli;
pub mod db;
pub mod egress;
pub mod engine;
pub mod mail;
pub mod oci;
pub mod runtime;
pub mod telemetry;
