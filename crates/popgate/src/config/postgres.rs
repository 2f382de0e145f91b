//! `store = { kind = "postgres", ... }` and `auth = { kind = "postgres", ... }`,
//! read straight into the backend's own [`PgConfig`]: its defaults are
//! `PgConfig::new`'s and its checks are `PgConfig::validate`'s; only the key
//! names live here.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use backend_postgres::PgConfig;
use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// The keys of the table, as an unknown key's error lists them.
const KEYS: &[&str] = &[
    "url",
    "schema",
    "max_connections",
    "min_connections",
    "connect_timeout",
    "statement_timeout",
    "idle_timeout",
];

/// `store = { kind = "postgres", ... }` and `auth = { kind = "postgres", ... }`.
#[derive(Debug, Clone)]
pub struct PgSection(PgConfig);

impl Deref for PgSection {
    type Target = PgConfig;
    fn deref(&self) -> &PgConfig {
        &self.0
    }
}

impl PgSection {
    pub fn pg_config(&self) -> PgConfig {
        self.0.clone()
    }

    /// Checks the settings; `key` is the section's key, e.g. `tenants[0].store`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.0
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
        let mut url = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "url" => url = Some(map.next_value()?),
                "schema" => c.schema = map.next_value()?,
                "max_connections" => c.max_connections = map.next_value()?,
                "min_connections" => c.min_connections = map.next_value()?,
                "connect_timeout" => c.connect_timeout = duration(&mut map)?,
                "statement_timeout" => c.statement_timeout = duration(&mut map)?,
                "idle_timeout" => c.idle_timeout = duration(&mut map)?,
                other => return Err(de::Error::unknown_field(other, KEYS)),
            }
        }
        c.url = url.ok_or_else(|| de::Error::missing_field("url"))?;
        Ok(PgSection(c))
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
    }
}
