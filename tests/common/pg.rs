//! Postgres databases for tests: one per name, created on first use.
//!
//! The server is `WEFT_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`, this machine kind's trust-auth
//! server). Without one, a test that needs it returns early with a notice,
//! unless `WEFT_REQUIRE_POSTGRES` is set (CI), where it fails.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::path::Path;

use sqlx::Connection as _;

fn server() -> String {
    std::env::var("WEFT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Runs `f` on a runtime of its own (callers may be sync or async).
fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
    .join()
    .expect("postgres helper thread")
}

/// Whether the test Postgres answers; fails instead when it must.
pub fn available() -> bool {
    let url = format!("{}/postgres", server());
    let ok = block_on(async move { sqlx::PgConnection::connect(&url).await.is_ok() });
    if !ok {
        assert!(
            std::env::var_os("WEFT_REQUIRE_POSTGRES").is_none(),
            "WEFT_REQUIRE_POSTGRES is set but Postgres at {} does not answer",
            server()
        );
        eprintln!(
            "NOTICE: no Postgres at {} (set WEFT_TEST_POSTGRES); skipping a Postgres test",
            server()
        );
    }
    ok
}

/// A fresh, empty database `weft_t_<name>` (dropped first if it exists);
/// returns its URL.
pub fn fresh(name: &str) -> String {
    let db = format!("weft_t_{name}");
    let admin = format!("{}/postgres", server());
    let statement = db.clone();
    block_on(async move {
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to the test Postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {statement} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .expect("drop");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {statement}")))
            .execute(&mut conn)
            .await
            .expect("create database");
    });
    format!("{}/{db}", server())
}

/// The database of the server on `data_dir`: made empty the first time a
/// test binary asks for it, kept across restarts on the same directory.
pub fn database_for(data_dir: &Path) -> String {
    static MADE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut hasher = DefaultHasher::new();
    data_dir.hash(&mut hasher);
    let name = format!("{:016x}", hasher.finish());
    let mut made = MADE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if made.contains(&name) {
        return format!("{}/weft_t_{name}", server());
    }
    assert!(
        available(),
        "WEFT_TEST_BACKEND=postgres needs a Postgres server"
    );
    if made.is_empty() {
        drop_stale();
    }
    made.push(name.clone());
    fresh(&name)
}

/// Drops the databases earlier test runs left, except those in use (a
/// test binary running now): `DROP DATABASE` refuses those.
fn drop_stale() {
    let admin = format!("{}/postgres", server());
    block_on(async move {
        let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
            return;
        };
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'weft\\_t\\_%'")
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
        for name in names {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&mut conn)
            .await;
        }
    });
}
