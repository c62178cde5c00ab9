//! The end-to-end suites, one module each, in one test binary (each
//! binary of its own would link wasmtime and sqlx again). They drive the
//! real `weft` binary, real components built from `plugins/` and
//! `tests/fixtures/`, and a real database: SQLite, or Postgres with
//! `WEFT_TEST_BACKEND=postgres` (see [`common`]).
//!
//! Run one suite with a filter on its module, e.g.
//! `cargo test -p weft --test e2e -- webhooks::`.

mod common;

/// The HTTP API: runs, definitions, errors, pages, idempotency.
mod api;
/// The built-in step catalog, every plugin through the API.
mod catalog;
/// The plugin author's local loop (`weft plugin …`).
mod cli;
/// The administrator's CLI (`weft tenant …`, `weft key …`).
mod cli_admin;
/// The integrator's CLI (`weft workflow …`, `weft run …`).
mod cli_client;
/// The dashboard in headless Chromium.
mod dashboard;
/// A killed host loses no run.
mod durability;
/// The operator's egress policy.
mod egress;
/// The examples under `examples/`, as shipped.
mod examples;
/// Runs found by labels and presets; re-runs and bulk retries.
mod finding;
/// The operator's key and tenants' tokens.
mod keys;
/// One contract, every plugin language.
mod languages;
/// Per-tenant limits.
mod limits;
/// The mail outbox against a real SMTP server.
mod mail;
/// Steps with `for_each`: one attempt per item.
mod map;
/// Tenant plugins, the marketplace and capability grants.
mod marketplace;
/// Several hosts on one Postgres database.
mod multihost;
/// Plugins pushed to and pulled from a real OCI registry.
mod oci;
/// Traces exported over OTLP to a receiver decoding the official messages.
mod otel;
/// The sandbox against real components.
mod runtime;
/// Schedules and overlap control.
mod schedules;
/// People in the loop: tasks, signed links, reminders, expiry.
mod tasks;
/// Outbound webhooks to a local receiver.
mod webhooks;
