//! `store = { kind = "postgres", ... }` and `auth = { kind = "postgres", ... }`,
//! read straight into the backend's own [`PgConfig`]: its defaults are
//! `PgConfig::new`'s and its checks are `PgConfig::validate`'s; only the key
//! names live here.

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use backend_postgres::PgConfig;
use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// The keys of the table, as an unknown key's error lists them.
const KEYS: &[&str] = &[
    "url",
    "url_file",
    "schema",
    "max_connections",
    "min_connections",
    "connect_timeout",
    "statement_timeout",
    "idle_timeout",
];

/// `store = { kind = "postgres", ... }` and `auth = { kind = "postgres", ... }`.
#[derive(Debug, Clone)]
pub struct PgSection {
    config: PgConfig,
    /// `url` from this file (a mounted secret), read by
    /// [`PgSection::read_secret_files`].
    url_file: Option<PathBuf>,
}

impl Deref for PgSection {
    type Target = PgConfig;
    fn deref(&self) -> &PgConfig {
        &self.config
    }
}

impl PgSection {
    pub fn pg_config(&self) -> PgConfig {
        self.config.clone()
    }

    /// Reads `url_file` into the url; `key` is the section's key.
    pub(super) fn read_secret_files(&mut self, key: &str) -> Result<(), ConfigError> {
        if let Some(path) = self.url_file.take() {
            self.config.url = super::secrets::read(&format!("{key}.url_file"), &path)?;
        }
        Ok(())
    }

    /// Checks the settings; `key` is the section's key, e.g. `tenants[0].store`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.url_file.is_some() {
            return Err(ConfigError::new(
                format!("{key}.url_file"),
                "not read (the configuration was not loaded from a file)",
            ));
        }
        self.config
            .validate()
            .map_err(|(field, e)| ConfigError::new(format!("{key}.{field}"), e))
    }
}

impl<'de> Deserialize<'de> for PgSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("PgSection", KEYS, Keys)
    }
}

struct Keys;

/// A duration value (`"5s"`, `"10m"`, ...).
fn duration<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Duration, A::Error> {
    struct Value(Duration);
    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::duration::duration(d).map(Value)
        }
    }
    map.next_value::<Value>().map(|v| v.0)
}

impl<'de> de::Visitor<'de> for Keys {
    type Value = PgSection;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct PgSection")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PgSection, A::Error> {
        let mut c = PgConfig::new("");
        let (mut url, mut url_file) = (None, None::<PathBuf>);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "url" => url = Some(map.next_value()?),
                "url_file" => url_file = Some(map.next_value()?),
                "schema" => c.schema = map.next_value()?,
                "max_connections" => c.max_connections = map.next_value()?,
                "min_connections" => c.min_connections = map.next_value()?,
                "connect_timeout" => c.connect_timeout = duration(&mut map)?,
                "statement_timeout" => c.statement_timeout = duration(&mut map)?,
                "idle_timeout" => c.idle_timeout = duration(&mut map)?,
                other => return Err(de::Error::unknown_field(other, KEYS)),
            }
        }
        match (url, &url_file) {
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(
                    "url and url_file are both set: give one of them",
                ));
            }
            (Some(url), None) => c.url = url,
            (None, Some(_)) => {}
            (None, None) => return Err(de::Error::missing_field("url")),
        }
        Ok(PgSection {
            config: c,
            url_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<PgSection, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_backends() {
        let s = read(r#"{"url": "postgres://db/mail"}"#).unwrap();
        assert_eq!(s.pg_config(), PgConfig::new("postgres://db/mail"));
    }

    #[test]
    fn every_key_is_read() {
        let s = read(
            r#"{"url": "postgres://db/mail", "schema": "mail", "max_connections": 3,
                "min_connections": 1, "connect_timeout": "2s", "statement_timeout": "1m",
                "idle_timeout": "1h"}"#,
        )
        .unwrap();
        let mut want = PgConfig::new("postgres://db/mail");
        want.schema = "mail".into();
        want.max_connections = 3;
        want.min_connections = 1;
        want.connect_timeout = Duration::from_secs(2);
        want.statement_timeout = Duration::from_secs(60);
        want.idle_timeout = Duration::from_secs(3600);
        assert_eq!(s.pg_config(), want);
        assert_eq!(s.schema, "mail", "Deref to PgConfig");
    }

    #[test]
    fn refusals() {
        let e = read(r#"{"schema": "x"}"#).unwrap_err();
        assert!(e.contains("missing field `url`"), "{e}");
        let e = read(r#"{"url": "postgres://db/mail", "pool_size": 3}"#).unwrap_err();
        assert!(e.contains("unknown field `pool_size`"), "{e}");
        assert!(e.contains("idle_timeout"), "the known keys are listed: {e}");
        let e = read(r#"{"url": "postgres://db/mail", "max_connections": "ten"}"#).unwrap_err();
        assert!(e.contains("expected u32"), "{e}");
        let e = read(r#"{"url": "postgres://db/mail", "url_file": "/run/pg"}"#).unwrap_err();
        assert!(e.contains("url and url_file are both set"), "{e}");
    }

    #[test]
    fn url_file_is_read_with_its_key_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg-url");
        std::fs::write(&path, "postgres://popgate:pw@db/mail\n").unwrap();
        let json = format!(r#"{{"url_file": {:?}, "schema": "mail"}}"#, path);
        let mut s = read(&json).unwrap();
        s.read_secret_files("tenants[0].store").unwrap();
        assert_eq!(s.url, "postgres://popgate:pw@db/mail");
        s.validate("tenants[0].store").unwrap();
        let json = format!(r#"{{"url_file": {:?}}}"#, dir.path().join("missing"));
        let mut s = read(&json).unwrap();
        let e = s.read_secret_files("tenants[1].auth").unwrap_err();
        assert_eq!(e.key, "tenants[1].auth.url_file");
        assert!(e.message.contains("missing"), "{e}");
    }
}
