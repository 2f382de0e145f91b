//! `store = { kind = "postgres", ... }` and `auth = { kind = "postgres", ... }`:
//! the settings of PostgreSQL, checked by the backend's own [`PgConfig`].

use std::time::Duration;

use backend_postgres::PgConfig;
use serde::Deserialize;

use super::ConfigError;

/// `store = { kind = "postgres", ... }` and `auth = { kind = "postgres", ... }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PgSection {
    /// `postgres://user[:password]@host[:port]/database[?sslmode=...]`.
    pub url: String,
    /// The schema with popgate's tables (`popgate migrate` creates it).
    #[serde(default = "default_schema")]
    pub schema: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default)]
    pub min_connections: u32,
    /// How long an operation waits for a connection before [SYS/TEMP].
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "super::duration::duration"
    )]
    pub connect_timeout: Duration,
    /// PostgreSQL's statement_timeout for popgate's connections.
    #[serde(
        default = "default_statement_timeout",
        deserialize_with = "super::duration::duration"
    )]
    pub statement_timeout: Duration,
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "super::duration::duration"
    )]
    pub idle_timeout: Duration,
}

fn default_schema() -> String {
    PgConfig::DEFAULT_SCHEMA.into()
}
fn default_max_connections() -> u32 {
    PgConfig::new("").max_connections
}
fn default_connect_timeout() -> Duration {
    PgConfig::new("").connect_timeout
}
fn default_statement_timeout() -> Duration {
    PgConfig::new("").statement_timeout
}
fn default_idle_timeout() -> Duration {
    PgConfig::new("").idle_timeout
}

impl PgSection {
    pub fn pg_config(&self) -> PgConfig {
        PgConfig {
            url: self.url.clone(),
            schema: self.schema.clone(),
            max_connections: self.max_connections,
            min_connections: self.min_connections,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    /// Checks the settings; `key` is the section's key, e.g. `tenants[0].store`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.pg_config()
            .validate()
            .map_err(|(field, e)| ConfigError::new(format!("{key}.{field}"), e))
    }
}
