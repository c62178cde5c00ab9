//! Statements built at run time: multi-row writes and id lists.
//!
//! Text and arguments are kept apart until the statement runs, because the
//! two backends want them joined differently: SQLite runs several
//! statements in one query (one round trip to its connection thread), with
//! `?` placeholders bound in order across them; Postgres prepares one
//! statement at a time, with `$1…` numbered in it, so there several writes
//! become one statement of data-modifying `WITH` clauses.

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

    /// The text for `backend`: placeholders left as `?` on SQLite,
    /// numbered on Postgres (`$1`, `$2`, …).
    fn text(&self, backend: Backend) -> String {
        match backend {
            Backend::Sqlite => self.sql.clone(),
            Backend::Postgres => {
                let mut out = String::with_capacity(self.sql.len() + 2 * self.args.len());
                self.number_into(&mut out, 0);
                out
            }
        }
    }

    /// Appends the text with placeholders numbered after `before`
    /// arguments (`$<before + 1>`, …).
    fn number_into(&self, out: &mut String, before: usize) {
        let mut n = before;
        for c in self.sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
    }

    /// What the statement writes: (`INSERT` or `UPDATE`, table).
    fn target(&self) -> Option<(&str, &str)> {
        let mut words = self.sql.split_whitespace();
        match words.next()? {
            "INSERT" => Some(("INSERT", words.nth(1)?)),
            "UPDATE" => Some(("UPDATE", words.next()?)),
            _ => None,
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
/// on Postgres as few statements as [`groups`] allows, then `COMMIT` if
/// last. Their text varies with the row counts, so it is kept out of the
/// connection's statement cache.
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
            let (commit, writes) = match statements.split_last() {
                Some((last, rest)) if last.sql == "COMMIT" => (true, rest),
                _ => (false, statements),
            };
            for group in groups(writes) {
                match group {
                    [one] => one.execute(conn).await?,
                    many => {
                        let mut sql = String::from("WITH ");
                        let mut before = 0;
                        for (i, s) in many.iter().enumerate() {
                            if i > 0 {
                                sql.push_str(", ");
                            }
                            sql.push_str(&format!("w{i} AS ("));
                            s.number_into(&mut sql, before);
                            sql.push(')');
                            before += s.args.len();
                        }
                        sql.push_str(" SELECT 1");
                        sqlx::query_with(&sql, arguments(many)?)
                            .persistent(false)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
            }
            if commit {
                sqlx::query("COMMIT").execute(conn).await?;
            }
        }
    }
    Ok(())
}

/// Most arguments in one merged Postgres statement (the protocol allows
/// 65,535).
const MAX_ARGUMENTS: usize = 30_000;

/// Consecutive statements Postgres can run as one (data-modifying `WITH`
/// clauses of one statement): they all see the same snapshot, so a group
/// never holds two statements of different kinds on one table (an
/// `UPDATE` and an `INSERT … ON CONFLICT` could touch the same row, and
/// which wins is undefined), nor more than [`MAX_ARGUMENTS`] arguments.
/// Statements of one kind on one table write different rows by
/// construction ([`super::runs::Writes`]): one row each.
fn groups<'s, 'a>(statements: &'s [Statement<'a>]) -> Vec<&'s [Statement<'a>]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, s) in statements.iter().enumerate() {
        let clash = match s.target() {
            None => true,
            Some((verb, table)) => statements[start..i].iter().any(|earlier| {
                earlier
                    .target()
                    .is_none_or(|(v, t)| t == table && v != verb)
            }),
        };
        let arguments: usize = statements[start..=i].iter().map(|s| s.args.len()).sum();
        if (clash || arguments > MAX_ARGUMENTS) && i > start {
            out.push(&statements[start..i]);
            start = i;
        }
    }
    if start < statements.len() {
        out.push(&statements[start..]);
    }
    out
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
    fn postgres_groups_writes_unless_two_kinds_meet_on_a_table() {
        let sql = [
            "UPDATE attempts SET status = ?",
            "INSERT INTO attempts (a) VALUES (?)",
            "INSERT INTO steps (a) VALUES (?)",
            "UPDATE runs SET a = ? WHERE id = ?",
            "UPDATE runs SET a = ? WHERE id = ?",
            "INSERT INTO events (a) VALUES (?)",
            "INSERT INTO runs (a) VALUES (?)",
        ];
        let statements: Vec<Statement<'_>> = sql.iter().map(|s| Statement::new(s)).collect();
        let sizes: Vec<usize> = groups(&statements).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, [1, 5, 1]);

        // Many rows: split before the protocol's argument limit.
        let mut big = Statement::new("INSERT INTO steps (a) ");
        big.values(0..20_000_i64, |n| [Arg::from(n)]);
        let mut again = Statement::new("INSERT INTO steps (a) ");
        again.values(0..20_000_i64, |n| [Arg::from(n)]);
        let sizes: Vec<usize> = groups(&[big, again]).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, [1, 1]);
    }

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
