//! The database behind a [`crate::SqlDirectory`]: a MySQL/MariaDB or
//! PostgreSQL pool, a query run with bound parameters and a deadline, and
//! the result columns read by name whatever their SQL type.

use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::{Column, Row};

use crate::SqlConfig;
use crate::query::Dialect;

/// The columns popgate reads from a row; any others are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// `password`: `None` when the column is NULL.
    pub password: Option<String>,
    /// `enabled` (true-ish: enabled) and `nologin` (true-ish: disabled);
    /// enabled unless one of them says otherwise.
    pub enabled: bool,
    pub allow_nets: Option<String>,
    pub login_delay: Option<u32>,
    /// `user` (optional): the mailbox the login opens, if not its own.
    pub user: Option<String>,
    /// `location`, `mail` or `userdb_mail` (optional, the first not NULL):
    /// where the user's mail is (Dovecot's userdb `mail`).
    pub location: Option<String>,
    /// Whether the row had a `password` column at all.
    pub has_password_column: bool,
}

impl Found {
    /// What the row says of `login` (`local@domain`) once vouched for.
    pub fn info(&self, login: &str) -> popgate_auth::UserInfo {
        popgate_auth::UserInfo {
            login_delay: self.login_delay,
            // `username AS user` (Postfix Admin's query) names the login
            // itself: no override.
            mailbox: self.user.clone().filter(|u| !u.eq_ignore_ascii_case(login)),
            location: self.location.clone(),
        }
    }
}

/// At most this many rows are read: two tell "more than one".
const ROWS: usize = 2;

pub(crate) enum Db {
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl Db {
    /// A pool that connects when first used, so that a database that is
    /// down at start fails that tenant's logins, not the server.
    pub fn connect_lazy(config: &SqlConfig) -> Result<Db, String> {
        match config.dialect()? {
            #[cfg(feature = "mysql")]
            Dialect::MySql => {
                let options: sqlx::mysql::MySqlConnectOptions =
                    config.url.parse().map_err(|e| format!("{e}"))?;
                Ok(Db::MySql(
                    sqlx::mysql::MySqlPoolOptions::new()
                        .max_connections(config.max_connections)
                        .min_connections(config.min_connections)
                        .acquire_timeout(config.connect_timeout)
                        .idle_timeout(config.idle_timeout)
                        .connect_lazy_with(options),
                ))
            }
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                let options: sqlx::postgres::PgConnectOptions =
                    config.url.parse().map_err(|e| format!("{e}"))?;
                Ok(Db::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(config.max_connections)
                        .min_connections(config.min_connections)
                        .acquire_timeout(config.connect_timeout)
                        .idle_timeout(config.idle_timeout)
                        .connect_lazy_with(options),
                ))
            }
            #[allow(unreachable_patterns)]
            _ => Err("this build has no driver for the URL".into()),
        }
    }

    /// Runs `sql` with `params` bound, within `timeout`: the first rows
    /// (at most two).
    pub async fn rows(
        &self,
        sql: &str,
        params: &[String],
        timeout: Duration,
    ) -> Result<Vec<Found>, String> {
        let run = async {
            match self {
                #[cfg(feature = "mysql")]
                Db::MySql(pool) => {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                    for p in params {
                        q = q.bind(p.clone());
                    }
                    let rows: Vec<_> = q.fetch(pool).take_rows().await?;
                    rows.iter()
                        .map(mysql::found)
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                }
                #[cfg(feature = "postgres")]
                Db::Postgres(pool) => {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                    for p in params {
                        q = q.bind(p.clone());
                    }
                    let rows: Vec<_> = q.fetch(pool).take_rows().await?;
                    rows.iter()
                        .map(postgres::found)
                        .collect::<Result<Vec<_>, sqlx::Error>>()
                }
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result.map_err(|e: sqlx::Error| e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// Runs the listing query `sql` (nothing bound) and reads every row's
    /// login, streaming: each row (the first and every next) is waited for
    /// at most `timeout`, so a stalled database fails within `timeout`
    /// while a long listing goes on.
    pub async fn logins(&self, sql: &str, timeout: Duration) -> Result<Listing, String> {
        let sql = || sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            #[cfg(feature = "mysql")]
            Db::MySql(pool) => {
                collect(sqlx::query(sql()).fetch(pool), timeout, mysql::listed).await
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(pool) => {
                collect(sqlx::query(sql()).fetch(pool), timeout, postgres::listed).await
            }
        }
    }

    /// A round trip to the database, within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let run = async {
            match self {
                #[cfg(feature = "mysql")]
                Db::MySql(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
                #[cfg(feature = "postgres")]
                Db::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// What a listing query returned.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub logins: Vec<String>,
    /// Rows whose login was NULL or empty.
    pub skipped: u64,
}

/// One listing row: `Some(login)`, `Some(None)` for a NULL or empty one,
/// `None` when the row has none of the columns.
type Listed = Option<Option<String>>;

async fn collect<R, S>(
    mut rows: S,
    timeout: Duration,
    listed: fn(&R) -> Result<Listed, sqlx::Error>,
) -> Result<Listing, String>
where
    S: futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
{
    let mut out = Listing::default();
    loop {
        let row = match tokio::time::timeout(timeout, rows.try_next()).await {
            Err(_) => return Err(format!("no row within {timeout:?}")),
            Ok(row) => row.map_err(|e| e.to_string())?,
        };
        let Some(row) = row else {
            return Ok(out);
        };
        match listed(&row).map_err(|e| e.to_string())? {
            Some(Some(login)) => out.logins.push(login),
            Some(None) => out.skipped += 1,
            None => {
                return Err(
                    "the query returns neither a `user` column nor `username` (with `domain`): \
                     select the login AS user"
                        .into(),
                );
            }
        }
    }
}

/// The first [`ROWS`] rows of a stream; the rest is not read.
trait TakeRows<T> {
    async fn take_rows(self) -> Result<Vec<T>, sqlx::Error>;
}

impl<T, S> TakeRows<T> for S
where
    S: futures_util::Stream<Item = Result<T, sqlx::Error>> + Unpin,
{
    async fn take_rows(mut self) -> Result<Vec<T>, sqlx::Error> {
        let mut out = Vec::new();
        while out.len() < ROWS {
            match self.try_next().await? {
                Some(row) => out.push(row),
                None => break,
            }
        }
        Ok(out)
    }
}

/// A yes/no column: numbers (0 is no), booleans, or text (`1`, `y`, `yes`,
/// `t`, `true`, `on` are yes; anything else is no).
fn truthy_text(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "1" | "y" | "yes" | "t" | "true" | "on"
    )
}

/// Reads the columns of one row; `$decode` tries each Rust type the
/// driver may give a column until one fits.
macro_rules! driver {
    ($name:ident, $row:ty, ints: [$($int:ty),*]) => {
        mod $name {
            use super::*;

            fn has(row: &$row, name: &str) -> bool {
                row.columns().iter().any(|c| c.name().eq_ignore_ascii_case(name))
            }

            fn column_name(row: &$row, name: &str) -> Option<String> {
                row.columns()
                    .iter()
                    .find(|c| c.name().eq_ignore_ascii_case(name))
                    .map(|c| c.name().to_owned())
            }

            fn text(row: &$row, name: &str) -> Result<Option<String>, sqlx::Error> {
                let Some(col) = column_name(row, name) else {
                    return Ok(None);
                };
                if let Ok(v) = row.try_get::<Option<String>, _>(col.as_str()) {
                    return Ok(v);
                }
                if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(col.as_str()) {
                    return Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned()));
                }
                $(
                    if let Ok(v) = row.try_get::<Option<$int>, _>(col.as_str()) {
                        return Ok(v.map(|n| n.to_string()));
                    }
                )*
                Err(sqlx::Error::ColumnDecode {
                    index: col,
                    source: "expected text".into(),
                })
            }

            fn int(row: &$row, name: &str) -> Result<Option<i64>, sqlx::Error> {
                let Some(col) = column_name(row, name) else {
                    return Ok(None);
                };
                $(
                    if let Ok(v) = row.try_get::<Option<$int>, _>(col.as_str()) {
                        return Ok(v.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
                    }
                )*
                if let Ok(v) = row.try_get::<Option<bool>, _>(col.as_str()) {
                    return Ok(v.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
                }
                match text(row, &col)? {
                    None => Ok(None),
                    Some(t) if t.trim().parse::<i64>().is_ok() => Ok(t.trim().parse().ok()),
                    Some(t) => Ok(Some(i64::from(truthy_text(&t)))),
                }
            }

            pub(super) fn found(row: &$row) -> Result<Found, sqlx::Error> {
                let enabled = int(row, "enabled")?.is_none_or(|n| n != 0);
                let nologin = int(row, "nologin")?.is_some_and(|n| n != 0);
                let login_delay = int(row, "login_delay")?
                    .and_then(|n| u32::try_from(n).ok());
                Ok(Found {
                    has_password_column: has(row, "password"),
                    password: text(row, "password")?,
                    enabled: enabled && !nologin,
                    allow_nets: text(row, "allow_nets")?.filter(|n| !n.trim().is_empty()),
                    login_delay,
                    user: text(row, "user")?.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()),
                    location: location(row)?,
                })
            }

            /// A listing row's login: `user`, or `username` with `domain`
            /// (Dovecot's iterate_query), lower case; a `username` that
            /// holds an `@` already (Postfix Admin's) is the whole login.
            pub(super) fn listed(row: &$row) -> Result<Listed, sqlx::Error> {
                let clean = |v: Option<String>| {
                    v.map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty())
                };
                if has(row, "user") {
                    return Ok(Some(clean(text(row, "user")?)));
                }
                if !has(row, "username") {
                    return Ok(None);
                }
                let user = clean(text(row, "username")?);
                let domain = clean(text(row, "domain")?);
                Ok(Some(match (user, domain) {
                    (Some(u), Some(d)) if !u.contains('@') => Some(format!("{u}@{d}")),
                    (u, _) => u,
                }))
            }

            fn location(row: &$row) -> Result<Option<String>, sqlx::Error> {
                for col in ["location", "mail", "userdb_mail"] {
                    if let Some(l) = text(row, col)?.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()) {
                        return Ok(Some(l));
                    }
                }
                Ok(None)
            }
        }
    };
}

#[cfg(feature = "mysql")]
driver!(mysql, sqlx::mysql::MySqlRow, ints: [i64, u64, i32]);
#[cfg(feature = "postgres")]
driver!(postgres, sqlx::postgres::PgRow, ints: [i64, i32, i16]);

#[cfg(test)]
mod tests {
    #[test]
    fn yes_and_no() {
        for yes in ["1", "Y", "yes", "t", "TRUE", " on "] {
            assert!(super::truthy_text(yes), "{yes}");
        }
        for no in ["0", "n", "no", "false", "", "2x"] {
            assert!(!super::truthy_text(no), "{no}");
        }
    }
}
