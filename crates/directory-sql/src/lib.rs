//! The operator's own SQL query as a popgate [`Directory`](popgate_auth::Directory),
//! in the spirit of Dovecot's `passdb sql`: a provider's control panel
//! (Postfix Admin, ISPConfig, their own) keeps its users in MySQL/MariaDB
//! or PostgreSQL, and popgate reads them where they are.
//!
//! `password_query` is run for each login with the login's parts bound as
//! parameters ([`query`]: `$user`, `$local`, `$domain`, or Dovecot's `'%u'`,
//! `'%n'`, `'%d'`). Its result columns are read by name:
//! - `password` (required): a `{SCHEME}data` string in any scheme popgate
//!   takes; a string without `{SCHEME}` is read as `default_scheme`
//!   (Dovecot's `default_pass_scheme`, `CRYPT` unless set). NULL: the user
//!   cannot log in.
//! - `enabled` (optional; 0, false, `N`... disable) and `nologin`
//!   (optional; 1, true, `Y`... disable, as Dovecot's extra field).
//! - `allow_nets` (optional): Dovecot's list ([`popgate_auth::nets`]).
//! - `login_delay` (optional): seconds, RFC 2449 LOGIN-DELAY.
//!
//! - `user` (optional): Dovecot's `user` field, the mailbox the login opens
//!   (`local@domain`, or a bare local part in the login's domain) when it is
//!   not the login's own, as for an alias; it must be a mailbox of the same
//!   tenant, or the login is refused.
//! - `location`, `mail` or `userdb_mail` (optional): Dovecot's userdb
//!   `mail`, where this user's Maildir is (`maildir:/var/vmail/d/u/Maildir`
//!   or a bare path, `%n`/`%d`/`%u` expanded). It must lie below the
//!   tenant's Maildir root (the path template's fixed prefix), or the login
//!   is refused with `[SYS/TEMP]` and a warning; stores without paths
//!   ignore it. A `mail` column that holds an address, not a path, refuses
//!   every login: select it under another name.
//!
//! Other columns (`userdb_*`...) are ignored. No row: an unknown user, checked against a dummy hash so
//! that it costs what a wrong password does (the dummy is of the cost class
//! the query's rows have shown most, or a `default_scheme` hash before the
//! first row). More than one row: the login is refused and an error logged,
//! since the query does not say which user it is.
//!
//! `user_query` (optional) answers "does this user exist" for delivery,
//! by whether it returns a row; without it `password_query` does.
//! `iterate_query` (optional, Dovecot's name) lists every user for
//! `popgate migrate-mail --all`: a `user` column (`local@domain`), or
//! `username` and `domain`, as Dovecot reads it; rows are streamed, each
//! waited for at most `query_timeout`. A
//! database that is down or slower than `query_timeout` is an
//! [`AuthError`](popgate_auth::AuthError): POP3 `-ERR [SYS/TEMP]`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use popgate_auth::scheme::Scheme;

mod db;
mod directory;
pub mod query;

pub use directory::SqlDirectory;
pub use query::{Dialect, Query, QueryError};

#[cfg(not(any(feature = "mysql", feature = "postgres")))]
compile_error!("directory-sql needs the \"mysql\" or the \"postgres\" feature");

/// The settings of an SQL directory.
#[derive(Clone, PartialEq, Eq)]
pub struct SqlConfig {
    /// `mysql://user:password@host:3306/db` (also `mariadb://`) or
    /// `postgres://...` (also `postgresql://`).
    pub url: String,
    /// The query that returns the user's password and fields.
    pub password_query: String,
    /// The query that says whether a user exists (delivery).
    pub user_query: Option<String>,
    /// The query that lists every user (`migrate-mail --all`).
    pub iterate_query: Option<String>,
    /// The scheme of a password without a `{SCHEME}` prefix.
    pub default_scheme: Scheme,
    pub max_connections: u32,
    pub min_connections: u32,
    /// How long a login waits for a connection from the pool.
    pub connect_timeout: Duration,
    /// How long a query may take.
    pub query_timeout: Duration,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
}

impl SqlConfig {
    /// The defaults: `CRYPT`, 4 connections, 5 s to connect and per query,
    /// 10 minutes idle.
    pub fn new(url: impl Into<String>, password_query: impl Into<String>) -> Self {
        SqlConfig {
            url: url.into(),
            password_query: password_query.into(),
            user_query: None,
            iterate_query: None,
            default_scheme: Scheme::Crypt,
            max_connections: 4,
            min_connections: 0,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
        }
    }

    /// The dialect of the URL, if this build has its driver.
    pub fn dialect(&self) -> Result<Dialect, String> {
        let scheme = self
            .url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        let (dialect, feature) = match scheme.as_deref() {
            Some("mysql" | "mariadb") => (Dialect::MySql, "mysql"),
            Some("postgres" | "postgresql") => (Dialect::Postgres, "postgres"),
            _ => {
                return Err("expected a mysql://, mariadb:// or postgres:// URL".to_owned());
            }
        };
        let built = match dialect {
            Dialect::MySql => cfg!(feature = "mysql"),
            Dialect::Postgres => cfg!(feature = "postgres"),
        };
        if !built {
            return Err(format!(
                "{}:// is not in this build (built without the \"{feature}\" feature)",
                scheme.unwrap_or_default()
            ));
        }
        Ok(dialect)
    }

    /// Checks every setting without connecting; on error, the field and
    /// what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let dialect = self.dialect().map_err(|e| ("url", e))?;
        let parsed = match dialect {
            #[cfg(feature = "mysql")]
            Dialect::MySql => sqlx::mysql::MySqlConnectOptions::from_str(&self.url).map(drop),
            #[cfg(feature = "postgres")]
            Dialect::Postgres => sqlx::postgres::PgConnectOptions::from_str(&self.url).map(drop),
            #[allow(unreachable_patterns)]
            _ => Ok(()),
        };
        parsed.map_err(|e| ("url", format!("not a usable URL: {e}")))?;
        self.queries(dialect)?;
        if self.max_connections == 0 {
            return Err(("max_connections", "must be at least 1".into()));
        }
        if self.min_connections > self.max_connections {
            return Err((
                "min_connections",
                format!(
                    "{} is above max_connections ({})",
                    self.min_connections, self.max_connections
                ),
            ));
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("query_timeout", self.query_timeout),
        ] {
            if value.is_zero() {
                return Err((field, "must be above zero".into()));
            }
        }
        Ok(())
    }

    /// The parsed queries; on error, the field and what is wrong.
    fn queries(&self, dialect: Dialect) -> Result<Queries, (&'static str, String)> {
        let password = Query::parse(&self.password_query, dialect)
            .map_err(|e| ("password_query", e.to_string()))?;
        let user = match &self.user_query {
            Some(q) => Some(Query::parse(q, dialect).map_err(|e| ("user_query", e.to_string()))?),
            None => None,
        };
        let iterate = match &self.iterate_query {
            Some(q) => Some(
                Query::parse_unbound(q, dialect).map_err(|e| ("iterate_query", e.to_string()))?,
            ),
            None => None,
        };
        Ok(Queries {
            password,
            user,
            iterate,
        })
    }
}

/// The parsed queries of a configuration.
struct Queries {
    password: Query,
    user: Option<Query>,
    iterate: Option<Query>,
}

/// The URL without its password, for logs and `Debug`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlConfig")
            .field("url", &redacted(&self.url))
            .field("password_query", &self.password_query)
            .field("user_query", &self.user_query)
            .field("iterate_query", &self.iterate_query)
            .field("default_scheme", &self.default_scheme)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "SELECT password FROM mailbox WHERE username = '%u' AND active = 1";

    #[test]
    fn validation_names_the_field() {
        let ok = SqlConfig::new("mysql://popgate:pw@db/mail", Q);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(SqlConfig::new("postgres://db/mail", Q).validate(), Ok(()));
        assert_eq!(SqlConfig::new("mariadb://db/mail", Q).validate(), Ok(()));
        let field = |c: SqlConfig| c.validate().unwrap_err();
        assert_eq!(field(SqlConfig::new("sqlite://x", Q)).0, "url");
        let (f, e) = field(SqlConfig::new(
            "mysql://db/mail",
            "SELECT password FROM t WHERE u = $usr",
        ));
        assert_eq!(f, "password_query");
        assert!(e.contains("$usr"), "{e}");
        let mut c = ok.clone();
        c.user_query = Some("SELECT 1 FROM t WHERE u = '%z'".into());
        assert_eq!(field(c).0, "user_query");
        let mut c = ok.clone();
        c.iterate_query = Some("SELECT username FROM mailbox WHERE domain = '%d'".into());
        let (f, e) = field(c);
        assert_eq!(f, "iterate_query");
        assert!(e.contains("without a login"), "{e}");
        let mut c = ok.clone();
        c.iterate_query = Some("SELECT username AS user FROM mailbox".into());
        assert_eq!(c.validate(), Ok(()));
        let mut c = ok.clone();
        c.max_connections = 0;
        assert_eq!(field(c).0, "max_connections");
        let mut c = ok.clone();
        c.query_timeout = Duration::ZERO;
        assert_eq!(field(c).0, "query_timeout");
    }

    #[test]
    fn passwords_stay_out_of_debug() {
        let c = SqlConfig::new("mysql://popgate:s3cret@db:3306/mail", Q);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("popgate:***@db:3306/mail"),
            "{shown}"
        );
        assert_eq!(redacted("postgres://db/mail"), "postgres://db/mail");
        assert_eq!(redacted("postgres://u@db/mail"), "postgres://u@db/mail");
    }
}
