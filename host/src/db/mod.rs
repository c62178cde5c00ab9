//! Persistence: the only module that holds SQL.
//!
//! SQLite (WAL) is the embedded default. Writes go through one connection
//! (SQLite has one writer anyway; queuing in-process avoids `SQLITE_BUSY`
//! on lock upgrades), reads through a small pool. Every query is a function
//! taking a connection, so callers can run several in one transaction.
//!
//! # Layout
//! - [`auth`]: tenants and API keys.
//! - [`workflows`]: definitions and their versions.
//! - [`runs`]: runs, steps, attempts and the event log.
//! - [`schedules`]: schedules and the ticks they fired.
//! - [`webhooks`]: webhook subscriptions, deliveries and attempts.
//! - [`plugins`]: uploaded plugins, their bytes and tenants' grants.
//! - [`state`]: what plugins persist through host services: key-value
//!   entries, the mail outbox, files; and idempotency records of the API.

pub mod auth;
pub mod plugins;
pub mod runs;
pub mod schedules;
pub mod state;
pub mod webhooks;
pub mod workflows;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use sqlx::SqliteConnection as Conn;

/// A write transaction.
pub type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://path")]
    UnsupportedUrl(String),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
}

impl DbError {
    /// Whether the error is a unique-constraint violation (a duplicate).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// How hard SQLite works to keep a commit across power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// With WAL: a commit survives a killed process, and the database never
    /// corrupts; a power loss or OS crash may lose the last commits.
    Normal,
    /// Every commit is fsynced: survives power loss too, at a throughput cost.
    Full,
}

#[derive(Clone)]
pub struct Db {
    write: SqlitePool,
    read: SqlitePool,
}

impl Db {
    /// Opens (creating if needed) the database at `url` (`sqlite://path`,
    /// `sqlite::memory:` is not supported: the pools need one shared file)
    /// and applies migrations.
    pub async fn open(url: &str, synchronous: Synchronous) -> Result<Self, DbError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| DbError::UnsupportedUrl(url.to_owned()))?;
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // No ping before every acquire: the pools are local files, and a
        // ping is a round trip to the connection's thread per query.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { write, read })
    }

    /// A write transaction (`BEGIN IMMEDIATE`: takes the write lock up front).
    pub async fn begin(&self) -> Result<Tx, DbError> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A connection for reads.
    pub async fn reader(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, DbError> {
        Ok(self.read.acquire().await?)
    }

    /// A connection for a single write outside a transaction.
    pub async fn writer(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, DbError> {
        Ok(self.write.acquire().await?)
    }

    /// Makes every step still marked running claimable at once: for a host
    /// that owns the database alone, those were left by a stopped process.
    pub async fn release_leases(&self) -> Result<u64, DbError> {
        let done = sqlx::query("UPDATE steps SET lease_expires_at = 0 WHERE status = 'running'")
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    /// Whether this process is the database's only host: true for SQLite,
    /// which `weft serve` locks to one process. Lets the engine count
    /// running work in memory instead of asking the database.
    pub fn exclusive(&self) -> bool {
        true
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.read).await.is_ok()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Rolls back a transaction begun by hand (`BEGIN IMMEDIATE` sent as SQL);
/// harmless when none is open.
pub async fn rollback(conn: &mut Conn) -> Result<(), DbError> {
    match sqlx::query("ROLLBACK").execute(conn).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.message().contains("no transaction is active") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Ends a hand-begun transaction after an error: rolls it back, or, if
/// that fails, closes the connection so no one reuses it mid-transaction.
pub async fn abandon(conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>) {
    if rollback(conn).await.is_err() {
        conn.close_on_drop();
    }
}
