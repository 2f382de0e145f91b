//! `auth = { kind = "sql", url = "mysql://...", password_query = "..." }`:
//! the operator's own query on MySQL/MariaDB or PostgreSQL
//! (`directory-sql`). Left-out keys take `directory_sql::SqlConfig::new`'s
//! defaults; the checks are `SqlConfig::validate`'s, run by check-config
//! before anything listens.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSection {
    /// Holds the database password: or `url_file`.
    #[serde(default)]
    pub url: Option<String>,
    /// The url from a file (a mounted secret).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    pub password_query: String,
    #[serde(default)]
    pub user_query: Option<String>,
    /// Dovecot's `iterate_query`: every user, for `migrate-mail --all`.
    #[serde(default)]
    pub iterate_query: Option<String>,
    /// Dovecot's `default_pass_scheme`: the scheme of a bare hash.
    #[serde(default)]
    pub default_scheme: Option<String>,
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub min_connections: Option<u32>,
    #[serde(default, deserialize_with = "some_duration")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    pub query_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    pub idle_timeout: Option<Duration>,
}

/// Without the URL's password.
impl std::fmt::Debug for SqlSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSection")
            .field("url", &self.url.as_deref().map(directory_sql::redacted))
            .field("url_file", &self.url_file)
            .field("password_query", &self.password_query)
            .field("user_query", &self.user_query)
            .field("iterate_query", &self.iterate_query)
            .field("default_scheme", &self.default_scheme)
            .finish_non_exhaustive()
    }
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    super::duration::duration(d).map(Some)
}

impl SqlSection {
    /// The directory's settings; `key` is the section's key, e.g.
    /// `tenants[0].auth`. Fails naming the key, as check-config reports it.
    pub fn sql_config(&self, key: &str) -> Result<directory_sql::SqlConfig, ConfigError> {
        let (mut url, mut url_file) = (self.url.clone(), self.url_file.clone());
        super::secrets::resolve(&format!("{key}.url"), &mut url, &mut url_file)?;
        let url = url.ok_or_else(|| {
            ConfigError::new(format!("{key}.url"), "missing: give url or url_file")
        })?;
        let mut c = directory_sql::SqlConfig::new(url, &self.password_query);
        c.user_query.clone_from(&self.user_query);
        c.iterate_query.clone_from(&self.iterate_query);
        if let Some(name) = &self.default_scheme {
            c.default_scheme = name
                .parse()
                .map_err(|e| ConfigError::new(format!("{key}.default_scheme"), format!("{e}")))?;
        }
        let set = |target: &mut u32, value: Option<u32>| {
            if let Some(v) = value {
                *target = v;
            }
        };
        set(&mut c.max_connections, self.max_connections);
        set(&mut c.min_connections, self.min_connections);
        for (target, value) in [
            (&mut c.connect_timeout, self.connect_timeout),
            (&mut c.query_timeout, self.query_timeout),
            (&mut c.idle_timeout, self.idle_timeout),
        ] {
            if let Some(v) = value {
                *target = v;
            }
        }
        c.validate()
            .map_err(|(field, e)| ConfigError::new(format!("{key}.{field}"), e))?;
        Ok(c)
    }

    /// Reads `url_file` into `url`; `key` is the section's key.
    pub(super) fn read_secret_files(&mut self, key: &str) -> Result<(), ConfigError> {
        super::secrets::resolve(&format!("{key}.url"), &mut self.url, &mut self.url_file)
    }

    /// Checks the settings without connecting.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.sql_config(key).map(drop)
    }
}

#[cfg(all(test, feature = "mysql", feature = "postgres"))]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<SqlSection, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    const Q: &str = "SELECT password FROM mailbox WHERE username = '%u' AND active = '1'";

    #[test]
    fn every_key_is_read() {
        let s = read(&format!(
            r#"{{"url": "mysql://u:p@db/postfix", "password_query": "{Q}",
                "user_query": "SELECT 1 FROM mailbox WHERE username = $user",
                "default_scheme": "sha512-crypt", "max_connections": 3, "min_connections": 1,
                "connect_timeout": "2s", "query_timeout": "500ms", "idle_timeout": "1h"}}"#
        ))
        .unwrap();
        let c = s.sql_config("tenants[0].auth").unwrap();
        assert_eq!(c.default_scheme, popgate_auth::scheme::Scheme::Sha512Crypt);
        assert_eq!((c.max_connections, c.min_connections), (3, 1));
        assert_eq!(c.query_timeout, Duration::from_millis(500));
        assert_eq!(c.idle_timeout, Duration::from_secs(3600));
        assert!(c.user_query.is_some());
        assert!(!format!("{s:?}").contains(":p@"), "{s:?}");
        let d = read(&format!(
            r#"{{"url": "postgres://db/x", "password_query": "{Q}"}}"#
        ))
        .unwrap()
        .sql_config("k")
        .unwrap();
        assert_eq!(d, directory_sql::SqlConfig::new("postgres://db/x", Q));
    }

    #[test]
    fn url_file_is_read_with_its_key_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-url");
        std::fs::write(&path, "mysql://popgate:s3cret@db/postfix\n").unwrap();
        let json = format!(r#"{{"url_file": {path:?}, "password_query": "{Q}"}}"#);
        let c = read(&json).unwrap().sql_config("tenants[0].auth").unwrap();
        assert_eq!(c.url, "mysql://popgate:s3cret@db/postfix");
        let e = read(&format!(
            r#"{{"url": "mysql://db/x", "url_file": {path:?}, "password_query": "{Q}"}}"#
        ))
        .unwrap()
        .validate("tenants[0].auth")
        .unwrap_err();
        assert_eq!(e.key, "tenants[0].auth.url_file");
        let e = read(&format!(r#"{{"password_query": "{Q}"}}"#))
            .unwrap()
            .validate("tenants[0].auth")
            .unwrap_err();
        assert_eq!(e.key, "tenants[0].auth.url");
        let gone = dir.path().join("gone");
        let e = read(&format!(
            r#"{{"url_file": {gone:?}, "password_query": "{Q}"}}"#
        ))
        .unwrap()
        .validate("tenants[0].auth")
        .unwrap_err();
        assert!(
            e.key == "tenants[0].auth.url_file" && !e.message.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn refusals_name_the_key() {
        let e = read(r#"{"url": "mysql://db/x"}"#).unwrap_err();
        assert!(e.contains("missing field `password_query`"), "{e}");
        let e = read(&format!(
            r#"{{"url": "mysql://db/x", "password_query": "{Q}", "pool": 3}}"#
        ))
        .unwrap_err();
        assert!(
            e.contains("unknown field `pool`") && e.contains("query_timeout"),
            "{e}"
        );
        let bad = |json: String| {
            read(&json)
                .unwrap()
                .validate("tenants[1].auth")
                .unwrap_err()
                .to_string()
        };
        let e = bad(r#"{"url": "mysql://db/x", "password_query": "SELECT password FROM m WHERE u = $login"}"#.into());
        assert!(
            e.starts_with("tenants[1].auth.password_query: unknown variable $login"),
            "{e}"
        );
        let e = bad(format!(
            r#"{{"url": "mysql://db/x", "password_query": "{Q}", "default_scheme": "NTLM"}}"#
        ));
        assert!(
            e.starts_with("tenants[1].auth.default_scheme: unknown password scheme"),
            "{e}"
        );
        let e = bad(format!(
            r#"{{"url": "sqlite://x", "password_query": "{Q}"}}"#
        ));
        assert!(e.starts_with("tenants[1].auth.url: "), "{e}");
        let e = bad(format!(
            r#"{{"url": "mysql://db/x", "password_query": "{Q}", "user_query": "SELECT 1 FROM m WHERE u = '%q'"}}"#
        ));
        assert!(
            e.starts_with("tenants[1].auth.user_query: unknown variable %q"),
            "{e}"
        );
        let e = bad(format!(
            r#"{{"url": "mysql://db/x", "password_query": "{Q}", "iterate_query": "SELECT username FROM m WHERE d = '%d'"}}"#
        ));
        assert!(
            e.starts_with("tenants[1].auth.iterate_query: ") && e.contains("without a login"),
            "{e}"
        );
    }
}
