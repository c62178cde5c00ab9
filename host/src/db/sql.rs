//! Statements built at run time: multi-row writes and id lists.
//!
//! Text and arguments are kept apart until the statement runs, because the
//! two backends want them joined differently. SQLite runs several
//! statements in one query (one round trip to its connection thread), with
//! `?` placeholders bound in order across them. On Postgres a statement
//! with bound arguments that is not in the connection's cache costs two
//! round trips (prepare, then bind and execute), and only one statement
//! goes at a time; these statements' text varies with their row counts, so
//! they would never be cached. There the arguments are written into the
//! text as literals ([`Statement::inline_into`]) and every statement, a
//! `BEGIN` before and a `COMMIT` after, go as one simple query: one round
//! trip, each statement seeing the ones before.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Arguments, AssertSqlSafe};

use super::{Backend, Conn, DbError};

/// The longest SQLite text kept prepared in the connection's statement
/// cache (sqlx's, 100 statements a connection). The hot path's shapes are
/// few and short (a result recorded with its dependent: two attempts, two
/// steps, the run, its events), and parsing them again each time cost about a fifth of a
/// chain's time per step; long texts (big batches, many ids) vary too much
/// to be reused, and a cache of them would only hold memory.
const CACHED_SQL_MAX: usize = 8 * 1024;

/// An argument of a [`Statement`].
#[derive(Debug, Clone)]
pub enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Owned(Option<String>),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Self::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Self::Text(v.as_deref())
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

/// One SQL statement: text with a `?` where each argument goes (the text
/// holds no other `?`), and its arguments in order.
#[derive(Debug, Default)]
pub struct Statement<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Statement<'a> {
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// A placeholder, bound to `arg`.
    pub fn bind(&mut self, arg: impl Into<Arg<'a>>) -> &mut Self {
        self.sql.push('?');
        self.args.push(arg.into());
        self
    }

    /// `(?, ?, …)`, bound to `args`.
    pub fn tuple<I: IntoIterator<Item = Arg<'a>>>(&mut self, args: I) -> &mut Self {
        self.sql.push('(');
        for (i, arg) in args.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(arg);
        }
        self.sql.push(')');
        self
    }

    /// `VALUES (…), (…)`: one tuple a row.
    pub fn values<T, I: IntoIterator<Item = Arg<'a>>>(
        &mut self,
        rows: impl IntoIterator<Item = T>,
        row: impl Fn(T) -> I,
    ) -> &mut Self {
        self.sql.push_str("VALUES ");
        for (i, r) in rows.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.tuple(row(r));
        }
        self
    }

    /// Appends the text with every placeholder replaced by its argument as
    /// a Postgres literal: `NULL`, an integer, or a string in single quotes
    /// with each quote doubled. That is the whole escaping a literal needs
    /// with `standard_conforming_strings` on (Postgres's default, and set
    /// on every connection: `Db::open`), where a backslash is an ordinary
    /// character.
    pub fn inline_into(&self, out: &mut String) {
        let mut args = self.args.iter();
        for c in self.sql.chars() {
            if c != '?' {
                out.push(c);
                continue;
            }
            match args.next() {
                None | Some(Arg::Text(None) | Arg::Int(None) | Arg::Owned(None)) => {
                    out.push_str("NULL");
                }
                Some(Arg::Int(Some(n))) => out.push_str(&n.to_string()),
                Some(Arg::Text(Some(text))) => quote_into(out, text),
                Some(Arg::Owned(Some(text))) => quote_into(out, text),
            }
        }
    }

    pub async fn fetch_all(&self, conn: &mut Conn) -> Result<Vec<AnyRow>, DbError> {
        match Backend::of(conn) {
            Backend::Sqlite => Ok(sqlx::query_with(
                AssertSqlSafe(self.sql.as_str()),
                arguments([self])?,
            )
            .persistent(self.sql.len() <= CACHED_SQL_MAX)
            .fetch_all(conn)
            .await?),
            Backend::Postgres => {
                let mut sql = String::with_capacity(self.sql.len() + 16 * self.args.len());
                self.inline_into(&mut sql);
                // No arguments: one simple query.
                Ok(sqlx::Executor::fetch_all(conn, AssertSqlSafe(sql)).await?)
            }
        }
    }

    pub async fn execute(&self, conn: &mut Conn) -> Result<(), DbError> {
        execute_all(conn, std::slice::from_ref(self)).await
    }
}

/// `text` as a Postgres string literal (see [`Statement::inline_into`]).
fn quote_into(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
}

/// Runs statements in order, in one round trip: on SQLite one query with
/// bound arguments, on Postgres one simple query with the arguments
/// written in ([`Statement::inline_into`]). Their text varies with the row
/// counts; on SQLite a short one is kept prepared ([`CACHED_SQL_MAX`]).
pub async fn execute_all(conn: &mut Conn, statements: &[Statement<'_>]) -> Result<(), DbError> {
    if statements.is_empty() {
        return Ok(());
    }
    match Backend::of(conn) {
        Backend::Sqlite => {
            let sql = statements
                .iter()
                .map(|s| s.sql.as_str())
                .collect::<Vec<_>>()
                .join(";\n");
            let persistent = sql.len() <= CACHED_SQL_MAX;
            sqlx::query_with(AssertSqlSafe(sql), arguments(statements)?)
                .persistent(persistent)
                .execute(conn)
                .await?;
        }
        Backend::Postgres => {
            let mut sql = String::new();
            for (i, s) in statements.iter().enumerate() {
                if i > 0 {
                    sql.push_str(";\n");
                }
                s.inline_into(&mut sql);
            }
            // No arguments: one simple query.
            sqlx::Executor::execute(conn, AssertSqlSafe(sql)).await?;
        }
    }
    Ok(())
}

fn arguments<'s>(
    statements: impl IntoIterator<Item = &'s Statement<'s>>,
) -> Result<AnyArguments, DbError> {
    let mut out = AnyArguments::default();
    for s in statements {
        for arg in &s.args {
            match arg {
                Arg::Text(v) => out.add(*v),
                Arg::Int(v) => out.add(*v),
                Arg::Owned(v) => out.add(v.as_deref()),
            }
            .map_err(|e| DbError::Sqlx(sqlx::Error::Encode(e)))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_gets_arguments_as_literals_quotes_doubled() {
        let mut s = Statement::new("INSERT INTO t (a, b, c) ");
        s.values(
            [
                (Arg::from(1_i64), Arg::from("it's"), Arg::from(None::<i64>)),
                (
                    Arg::from(-2_i64),
                    Arg::Owned(Some("a\\'; DROP TABLE t; --?".into())),
                    Arg::from(None::<&str>),
                ),
            ],
            |(a, b, c)| [a, b, c],
        );
        let mut out = String::new();
        s.inline_into(&mut out);
        assert_eq!(
            out,
            "INSERT INTO t (a, b, c) VALUES (1, 'it''s', NULL), (-2, 'a\\''; DROP TABLE t; --?', NULL)"
        );
    }
}
