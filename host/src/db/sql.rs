//! Statements built at run time: multi-row writes and id lists.
//!
//! Text and arguments are kept apart until the statement runs, because the
//! two backends want them joined differently: SQLite runs several
//! statements in one query (one round trip to its connection thread), with
//! `?` placeholders bound in order across them; Postgres prepares one
//! statement at a time, with `$1…` numbered in each.

use sqlx::Arguments;
use sqlx::any::{AnyArguments, AnyRow};

use super::{Backend, Conn, DbError};

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

    /// The text for `backend`: placeholders numbered on Postgres (`$1`,
    /// `$2`, …), left as `?` on SQLite.
    fn text(&self, backend: Backend) -> String {
        match backend {
            Backend::Sqlite => self.sql.clone(),
            Backend::Postgres => {
                let mut out = String::with_capacity(self.sql.len() + 2 * self.args.len());
                let mut n = 0;
                for c in self.sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    pub async fn fetch_all(&self, conn: &mut Conn) -> Result<Vec<AnyRow>, DbError> {
        let sql = self.text(Backend::of(conn));
        Ok(sqlx::query_with(&sql, arguments([self])?)
            .persistent(false)
            .fetch_all(conn)
            .await?)
    }

    pub async fn execute(&self, conn: &mut Conn) -> Result<(), DbError> {
        let sql = self.text(Backend::of(conn));
        sqlx::query_with(&sql, arguments([self])?)
            .persistent(false)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Runs statements in order: on SQLite all in one query (one round trip);
/// on Postgres one at a time. Their text varies with the row counts, so it
/// is kept out of the connection's statement cache.
pub async fn execute_all(conn: &mut Conn, statements: &[Statement<'_>]) -> Result<(), DbError> {
    match Backend::of(conn) {
        Backend::Sqlite => {
            if statements.is_empty() {
                return Ok(());
            }
            let sql = statements
                .iter()
                .map(|s| s.sql.as_str())
                .collect::<Vec<_>>()
                .join(";\n");
            sqlx::query_with(&sql, arguments(statements)?)
                .persistent(false)
                .execute(conn)
                .await?;
        }
        Backend::Postgres => {
            for s in statements {
                s.execute(conn).await?;
            }
        }
    }
    Ok(())
}

fn arguments<'s>(
    statements: impl IntoIterator<Item = &'s Statement<'s>>,
) -> Result<AnyArguments<'s>, DbError> {
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
    fn postgres_numbers_placeholders_sqlite_keeps_them() {
        let mut s = Statement::new("INSERT INTO t (a, b) ");
        s.values([(1_i64, "x"), (2, "y")], |(a, b)| {
            [Arg::from(a), Arg::from(b)]
        });
        assert_eq!(
            s.text(Backend::Sqlite),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            s.text(Backend::Postgres),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }
}
