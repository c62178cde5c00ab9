//! Persistence: the only module that holds SQL.
//!
//! SQLite (WAL) is the embedded default: writes go through one connection
//! (SQLite has one writer anyway; queuing in-process avoids `SQLITE_BUSY`
//! on lock upgrades), reads through a small pool. Postgres lets several
//! hosts share one database, and their transactions commit in parallel:
//! each serialises only what it must — a run's row lock (taken first by
//! every transaction that changes the run), an advisory lock per workflow
//! where its concurrency limit is enforced ([`lock`]); a tenant's cap on
//! running steps is split into per-host shares ([`slots`]), so claims
//! take no lock for it. The event feeds stay in commit order without a
//! global lock: see [`webhooks::events_after`].
//! Every query is a function taking a connection (sqlx's
//! `Any` driver: the same SQL, `$N` placeholders, on both), so callers can
//! run several in one transaction; the few statements that differ ask
//! [`Backend::of`] the connection. A bound `LIMIT` or `OFFSET` is always
//! an expression (`LIMIT $3 + 0`): given a bare parameter there, SQLite
//! 3.51 plans for its value and prepares the statement again after every
//! rebind (9 µs against 3 µs for a page of one run's events).
//!
//! # Layout
//! - [`auth`]: tenants and API keys.
//! - [`workflows`]: definitions and their versions.
//! - [`runs`]: runs, steps, attempts and the event log.
//! - [`slots`]: hosts' shares of tenants' caps on running steps (Postgres).
//! - [`schedules`]: schedules and the ticks they fired.
//! - [`webhooks`]: webhook subscriptions, deliveries and attempts.
//! - [`plugins`]: uploaded plugins, their bytes and tenants' grants.
//! - [`sql`]: statements built at run time (multi-row writes, id lists).
//! - [`state`]: what plugins persist through host services: key-value
//!   entries, the mail outbox, files; and idempotency records of the API.

pub mod auth;
pub mod items;
pub mod plugins;
pub mod presets;
pub mod runs;
pub mod schedules;
pub mod slots;
mod sql;
pub mod state;
mod status;
pub mod tasks;
#[cfg(test)]
mod tests;
pub mod webhooks;
pub mod workflows;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection as _};

pub use sql::{Arg, Statement};
pub use sqlx::AnyConnection as Conn;

/// A write transaction ([`Db::begin`]): on Postgres sqlx's, on a pooled
/// connection; on SQLite begun by hand on the writer ([`HandTx`]).
pub struct Tx(TxOn);

enum TxOn {
    Pool(sqlx::Transaction<'static, sqlx::Any>),
    Writer(HandTx),
}

impl Tx {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.0 {
            TxOn::Pool(tx) => tx.commit().await,
            TxOn::Writer(mut tx) => {
                sqlx::query("COMMIT").execute(&mut *tx).await?;
                tx.committed();
                Ok(())
            }
        }
    }

    /// Rolls the transaction back; what cannot be rolled back now is
    /// ended on drop.
    pub async fn rollback(self) {
        match self.0 {
            TxOn::Pool(tx) => {
                let _ = tx.rollback().await;
            }
            TxOn::Writer(tx) => tx.abandon().await,
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        match &self.0 {
            TxOn::Pool(tx) => tx,
            TxOn::Writer(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        match &mut self.0 {
            TxOn::Pool(tx) => tx,
            TxOn::Writer(tx) => tx,
        }
    }
}

/// A connection taken for a while: from a pool, or SQLite's writer.
pub struct Pooled(Taken);

enum Taken {
    Pool(sqlx::pool::PoolConnection<sqlx::Any>),
    Writer(tokio::sync::OwnedMutexGuard<Writer>),
}

impl Pooled {
    /// Ends whatever transaction is open on the connection once it is
    /// dropped: a pooled connection is closed; SQLite's writer rolls back
    /// before its next task uses it.
    pub fn close_on_drop(&mut self) {
        match &mut self.0 {
            Taken::Pool(conn) => conn.close_on_drop(),
            Taken::Writer(writer) => writer.roll_back = true,
        }
    }
}

impl std::ops::Deref for Pooled {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        match &self.0 {
            Taken::Pool(conn) => conn,
            Taken::Writer(writer) => &writer.conn,
        }
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        match &mut self.0 {
            Taken::Pool(conn) => conn,
            Taken::Writer(writer) => &mut writer.conn,
        }
    }
}

/// SQLite's one write connection, taken by one task at a time. It is not
/// in an sqlx pool: a pool pings a connection on its way back (a round
/// trip to the connection's thread) before the next task may take it,
/// which on a chain of steps was about a tenth of each step's time.
pub(crate) struct Writer {
    conn: Conn,
    /// A task dropped it inside a transaction: the next task rolls that
    /// back first.
    roll_back: bool,
    /// How to open it again should its connection break.
    url: String,
    pragmas: Vec<String>,
}

/// Runs `pragmas` on `conn`, in order: what every SQLite connection of a
/// [`Db`] is set up with.
async fn apply_pragmas(conn: &mut Conn, pragmas: &[String]) -> Result<(), sqlx::Error> {
    for pragma in pragmas {
        sqlx::query(AssertSqlSafe(pragma.as_str()))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Writer {
    async fn connect(url: &str, pragmas: &[String]) -> Result<Conn, DbError> {
        let mut conn = AnyConnection::connect(url).await?;
        apply_pragmas(&mut conn, pragmas).await?;
        Ok(conn)
    }

    /// Rolls back what the last task left open. A connection that cannot
    /// (its thread or file is gone) is replaced by a new one, as a pool
    /// would: a writer that broke once does not fail every write after.
    async fn recover(&mut self) -> Result<(), DbError> {
        match rollback(&mut self.conn).await {
            Ok(()) => {}
            Err(DbError::Sqlx(sqlx::Error::WorkerCrashed | sqlx::Error::Io(_))) => {
                tracing::warn!("SQLite's write connection broke; opening a new one");
                self.conn = Self::connect(&self.url, &self.pragmas).await?;
            }
            Err(e) => return Err(e),
        }
        self.roll_back = false;
        Ok(())
    }
}

/// How long a task waits for SQLite's writer before giving up (as sqlx's
/// pools do for a connection).
const WRITER_WAIT: Duration = Duration::from_secs(30);

/// How a Postgres write transaction begins: READ COMMITTED whatever the
/// database's default, so every statement after a lock sees what the
/// lock's previous holder committed.
pub(crate) const PG_BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// The advisory lock of the mail sender: one host sends at a time.
pub const MAIL_LOCK: i64 = 0x7765_6675;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://path or postgres://user@host/database")]
    UnsupportedUrl(String),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

impl DbError {
    /// Whether the error is a unique-constraint violation (a duplicate).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// Whether Postgres aborted the transaction to break a deadlock or a
    /// serialization conflict: the same work may simply be tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Sqlx(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("40P01" | "40001")))
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

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(conn: &Conn) -> Self {
        if conn.backend_name() == "PostgreSQL" {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// How `weft serve` connects.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// SQLite only.
    pub synchronous: Synchronous,
    /// Postgres only: the pool's size.
    pub max_connections: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            max_connections: 16,
        }
    }
}

#[derive(Clone)]
pub struct Db {
    write: Write,
    read: AnyPool,
    backend: Backend,
    url: Arc<str>,
    /// SQLite: checkpoints the write-ahead log while any clone lives.
    _checkpointer: Option<Arc<Checkpointer>>,
}

/// Where writes go.
#[derive(Clone)]
enum Write {
    /// Postgres: a pool.
    Pool(AnyPool),
    /// SQLite: one connection.
    One(Arc<tokio::sync::Mutex<Writer>>),
}

/// How often the checkpointer moves committed pages from SQLite's
/// write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The writer's own checkpoint threshold, in pages, when the checkpointer
/// runs. The log restarts from its start only when a writer begins on a
/// log copied whole, which a busy writer rarely sees beside a concurrent
/// checkpoint: so the writer still checkpoints at this size, finding
/// nearly every page copied, and restarts the log; it bounds the log file
/// to about 40 MiB. At 2,000 pages the writer's checkpoints (two syncs
/// each) cost most of what the checkpointer saves.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// The first SQLite in which a checkpoint may run on one connection while
/// another commits: earlier versions could corrupt the database when the
/// checkpoint raced a writer restarting the log (fixed in 3.51.3).
const CONCURRENT_CHECKPOINT_SINCE: (u32, u32, u32) = (3, 51, 3);

/// Checkpoints SQLite's write-ahead log on a connection of its own, beside
/// the writer: otherwise the writer does it itself, inside a commit, every
/// 1,000 pages (copying them and syncing the file twice), and every result
/// recorded meanwhile waits. A `PASSIVE` checkpoint never waits for readers
/// or the writer; what it cannot copy yet it copies next time.
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpointer {
    fn start(mut conn: Conn) -> Self {
        Self(tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&mut conn)
                    .await
                {
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "could not checkpoint the write-ahead log; the writer checkpoints it meanwhile");
                    }
                    Err(_) => {}
                }
            }
        }))
    }
}

/// `"3.51.3"` as `(3, 51, 3)`; `None` if it is not such a version.
fn sqlite_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().unwrap_or(Some(0))?;
    Some((major, minor, patch))
}

impl Db {
    /// Opens (creating if needed) the database at `url` and applies
    /// migrations: `sqlite://path` (`sqlite::memory:` is not supported: the
    /// pools need one shared file) or `postgres://…` (the database must
    /// exist).
    pub async fn open(url: &str, options: Options) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Self::open_postgres(url, options).await;
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| DbError::UnsupportedUrl(url.to_owned()))?;
        if path.is_empty() || path.starts_with(":memory:") || path.contains('?') {
            return Err(DbError::UnsupportedUrl(url.to_owned()));
        }
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))?;
        }
        let synchronous = match options.synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        let pragmas = vec![
            "PRAGMA busy_timeout = 10000".to_owned(),
            "PRAGMA foreign_keys = ON".to_owned(),
            format!("PRAGMA synchronous = {synchronous}"),
        ];
        // The checkpointer's connection, if this SQLite can checkpoint
        // beside the writer safely.
        // It switches the file to WAL itself: a connection that has not
        // seen the log (no read since WAL began) cannot checkpoint it.
        let write_url = format!("sqlite://{path}?mode=rwc");
        let mut checkpoint = AnyConnection::connect(&write_url).await?;
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut checkpoint)
            .await?;
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut checkpoint)
            .await?;
        let checkpoint = if sqlite_version(&version) >= Some(CONCURRENT_CHECKPOINT_SINCE) {
            apply_pragmas(&mut checkpoint, &pragmas).await?;
            Some(checkpoint)
        } else {
            tracing::info!(%version, "SQLite checkpoints its write-ahead log on the writer: this version cannot do it beside it safely");
            checkpoint.close().await?;
            None
        };
        // Writes go through one connection (SQLite has one writer anyway;
        // queuing in-process avoids `SQLITE_BUSY` on lock upgrades).
        let write_pragmas: Vec<String> = pragmas
            .iter()
            .cloned()
            .chain(
                checkpoint
                    .is_some()
                    .then(|| format!("PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")),
            )
            .collect();
        let mut write = Writer::connect(&write_url, &write_pragmas).await?;
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut write)
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut write)
            .await?;
        let read_pragmas: Arc<[String]> = pragmas.into();
        let read = AnyPoolOptions::new()
            .max_connections(4)
            // No ping before every acquire: the pool is of local files, and
            // a ping is a round trip to the connection's thread.
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                let pragmas = read_pragmas.clone();
                Box::pin(async move { apply_pragmas(conn, &pragmas).await })
            })
            .connect(&format!("sqlite://{path}?mode=ro"))
            .await?;
        Ok(Self {
            write: Write::One(Arc::new(tokio::sync::Mutex::new(Writer {
                conn: write,
                roll_back: false,
                url: write_url,
                pragmas: write_pragmas,
            }))),
            read,
            backend: Backend::Sqlite,
            url: url.into(),
            _checkpointer: checkpoint.map(|conn| Arc::new(Checkpointer::start(conn))),
        })
    }

    async fn open_postgres(url: &str, options: Options) -> Result<Self, DbError> {
        // Two pools, as on SQLite: tasks waiting for a run's lock hold write
        // connections, so the lock holder's own reads (a definition not
        // cached yet) must not queue behind them. A session stuck in a
        // transaction (a frozen host) is ended by Postgres after 30 s,
        // releasing its locks; the engine's transactions last milliseconds.
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // Literals written into statements (`sql.rs`) rely
                        // on standard_conforming_strings.
                        sqlx::Executor::execute(
                            &mut *conn,
                            "SET idle_in_transaction_session_timeout = '30s'; SET standard_conforming_strings = on",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(url)
        };
        let total = options.max_connections.max(4);
        let write = pool(total / 2).await?;
        sqlx::migrate!("./migrations/postgres").run(&write).await?;
        let read = pool(total - total / 2).await?;
        Ok(Self {
            write: Write::Pool(write),
            read,
            backend: Backend::Postgres,
            url: url.into(),
            _checkpointer: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL the database was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A write transaction: on SQLite `BEGIN IMMEDIATE` (takes the write
    /// lock up front), on Postgres `BEGIN` at READ COMMITTED; what it
    /// changes it locks itself ([`lock`], `runs::locked_run`, …).
    pub async fn begin(&self) -> Result<Tx, DbError> {
        match &self.write {
            Write::Pool(pool) => Ok(Tx(TxOn::Pool(pool.begin_with(PG_BEGIN).await?))),
            Write::One(_) => {
                let mut tx = HandTx::new(self.writer().await?);
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *tx).await?;
                Ok(Tx(TxOn::Writer(tx)))
            }
        }
    }

    /// A connection for reads.
    pub async fn reader(&self) -> Result<Pooled, DbError> {
        Ok(Pooled(Taken::Pool(self.read.acquire().await?)))
    }

    /// A connection for writes: on SQLite the one writer, once the task
    /// before has let it go (and what it left open is rolled back). A
    /// transaction begun on it by hand goes through [`HandTx`], which ends
    /// it if the task stops midway.
    pub async fn writer(&self) -> Result<Pooled, DbError> {
        match &self.write {
            Write::Pool(pool) => Ok(Pooled(Taken::Pool(pool.acquire().await?))),
            Write::One(writer) => {
                let mut writer = tokio::time::timeout(WRITER_WAIT, writer.clone().lock_owned())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?;
                if writer.roll_back {
                    writer.recover().await?;
                }
                Ok(Pooled(Taken::Writer(writer)))
            }
        }
    }

    /// Makes every step still marked running claimable at once: for a host
    /// that owns the database alone, those were left by a stopped process.
    /// Does nothing on Postgres, where other hosts may hold those leases.
    pub async fn release_leases(&self) -> Result<u64, DbError> {
        if !self.exclusive() {
            return Ok(0);
        }
        let done = sqlx::query("UPDATE steps SET lease_expires_at = 0 WHERE status = 'running'")
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected())
    }

    /// Whether this process is the database's only host: true for SQLite,
    /// which `weft serve` locks to one process. Lets the engine count
    /// running work in memory instead of asking the database.
    pub fn exclusive(&self) -> bool {
        self.backend == Backend::Sqlite
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.read).await.is_ok()
    }
}

/// Work one host does at a time ([`Db::solo`]): holds a session advisory
/// lock on Postgres until released or dropped; nothing on SQLite.
pub struct Solo(Option<Pooled>);

impl Solo {
    /// Lets another host take the work.
    pub async fn release(mut self, key: i64) {
        if let Some(mut conn) = self.0.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for Solo {
    fn drop(&mut self) {
        // Released without unlocking: closing the connection unlocks.
        if let Some(conn) = &mut self.0 {
            conn.close_on_drop();
        }
    }
}

impl Db {
    /// Takes the work that `key` names if no other host is doing it.
    pub async fn solo(&self, key: i64) -> Result<Option<Solo>, DbError> {
        if self.exclusive() {
            return Ok(Some(Solo(None)));
        }
        let mut conn = self.writer().await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(taken.then_some(Solo(Some(conn))))
    }
}

/// Takes the advisory lock named `key` until the transaction ends, waiting
/// for it (Postgres; SQLite's single writer serialises everything anyway).
/// Keys are namespaced text (`tenant:<id>`, `workflow:<tenant>/<key>`);
/// they do not touch any row, so taking one assigns the transaction no id
/// (what the event feed's order relies on: see [`webhooks::events_after`]).
/// Where a transaction takes several, it takes them in sorted order.
pub async fn lock(conn: &mut Conn, key: &str) -> Result<(), DbError> {
    if Backend::of(conn) == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The advisory lock of a workflow's unfinished runs, held while its
/// concurrency limit or start interval is checked and runs are queued or
/// released.
pub fn workflow_lock(tenant: &str, workflow: &str) -> String {
    format!("workflow:{tenant}/{workflow}")
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

/// A connection for a transaction begun by hand (`BEGIN` sent as SQL,
/// ended by a `COMMIT` among its writes). Dropped while the transaction
/// may be open — an error not yet handled, or its task cancelled
/// mid-transaction (an HTTP client that hung up) — a pooled connection is
/// closed, which ends the transaction, instead of going back to the pool
/// with it open (on Postgres, holding its locks); SQLite's writer rolls it
/// back before anything else runs on it.
pub struct HandTx {
    conn: Pooled,
    open: bool,
}

impl HandTx {
    pub fn new(conn: Pooled) -> Self {
        Self { conn, open: true }
    }

    /// The transaction committed: the connection is released.
    pub fn committed(mut self) {
        self.open = false;
    }

    /// Ends the transaction after an error: rolls it back, or, if that
    /// fails, leaves it to be ended on drop (a pooled connection closed,
    /// SQLite's writer rolled back by its next taker).
    pub async fn abandon(mut self) {
        if rollback(&mut self.conn).await.is_ok() {
            self.open = false;
        }
    }
}

impl std::ops::Deref for HandTx {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for HandTx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Drop for HandTx {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}
