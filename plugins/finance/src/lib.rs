//! # weft-finance: money and calendar logic shared by Weft's plugins
//!
//! Pure functions and types, no host calls: every plugin that reads
//! amounts, dates or invoice records links this crate so they all agree on
//! what an amount, a due date or an "owed" invoice is.
//!
//! ```
//! use weft_finance::{Date, Decimal, Month};
//! let due = Date::parse("2026-01-31").unwrap().add_days(14);
//! assert_eq!(due.iso(), "2026-02-14");
//! assert_eq!(Month::parse("2026-02").unwrap().last_day().iso(), "2026-02-28");
//! let total: Decimal = ["0.10", "0.20"].iter().filter_map(|s| Decimal::parse(s)).sum();
//! assert_eq!(total.to_string(), "0.3");
//! ```
//!
//! # Layout
//!
//! - [`decimal`]: [`Decimal`], exact amounts (millionths in an `i128`).
//! - [`date`]: [`Date`] and [`Month`]: parsing, today (UTC), day and month
//!   arithmetic.
//! - [`timestamp`]: [`Timestamp`] (RFC 3339 or plain dates, in UTC) and the
//!   `since`/`until` [`Window`] of reports.
//! - [`invoice`]: the `invoices/<id>` record and which statuses are owed.
//! - [`report`]: [`PerCurrency`] totals and counted nouns for summaries.
//!
//! Architecture invariant: nothing here calls the host or depends on
//! `weft-sdk`; all of it runs in native unit tests.

pub mod date;
pub mod decimal;
pub mod invoice;
pub mod report;
pub mod timestamp;

pub use date::{Date, Month};
pub use decimal::Decimal;
pub use invoice::Invoice;
pub use report::PerCurrency;
pub use timestamp::{Timestamp, Window};
