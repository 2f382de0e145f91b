//! `[locks]`: where mailbox locks (and the fleet-wide limits) live.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::duration::duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
// Without the "redis" feature only `backend` is read (to refuse "redis").
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub struct LocksSection {
    pub backend: LockBackend,
    /// Redis: `redis://[:password@]host:port[/db]` or `rediss://...`.
    #[serde(default)]
    pub url: Option<String>,
    /// `url` read from this file (a mounted secret): one of the two.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Redis: how long a lock lives without renewal (renewed every ttl/3).
    #[serde(default = "default_lock_ttl", deserialize_with = "duration")]
    pub ttl: Duration,
    /// Redis: the first part of every key (`{key_prefix}:{tenant/login}:lock`).
    #[serde(default = "default_lock_prefix")]
    pub key_prefix: String,
    /// Redis: how long a login waits for a mailbox in use before [IN-USE].
    #[serde(default, deserialize_with = "duration")]
    pub wait: Duration,
    /// Redis: PEM CA certificates to trust for `rediss://` instead of the system's.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for LocksSection {
    fn default() -> Self {
        LocksSection {
            backend: LockBackend::Memory,
            url: None,
            url_file: None,
            ttl: default_lock_ttl(),
            key_prefix: default_lock_prefix(),
            wait: Duration::ZERO,
            tls_ca_file: None,
        }
    }
}

fn default_lock_ttl() -> Duration {
    Duration::from_secs(30)
}

fn default_lock_prefix() -> String {
    "popgate".into()
}

impl LocksSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        #[cfg(feature = "redis")]
        self.redis_config()?;
        #[cfg(not(feature = "redis"))]
        if self.backend == LockBackend::Redis {
            return Err(super::unbuilt("locks.backend", "\"redis\"", "redis"));
        }
        Ok(())
    }

    /// The Redis backend's settings, checked; `None` for the memory backend.
    #[cfg(feature = "redis")]
    pub fn redis_config(&self) -> Result<Option<backend_redis::RedisLocksConfig>, ConfigError> {
        if self.backend != LockBackend::Redis {
            return Ok(None);
        }
        let url = self.url.clone().ok_or_else(|| {
            ConfigError::new("locks.url", "backend = \"redis\" needs a url (or url_file)")
        })?;
        let mut c = backend_redis::RedisLocksConfig::new(url);
        c.ttl = self.ttl;
        c.key_prefix = self.key_prefix.clone();
        c.wait = self.wait;
        if let Some(path) = &self.tls_ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::new("locks.tls_ca_file", format!("{}: {e}", path.display()))
            })?;
            c.tls_ca = Some(pem);
        }
        c.validate()
            .map_err(|(field, e)| ConfigError::new(format!("locks.{field}"), e))?;
        Ok(Some(c))
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LockBackend {
    Memory,
    Redis,
}
