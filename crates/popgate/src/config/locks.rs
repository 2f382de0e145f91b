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
    /// Redis Sentinel, instead of `url`: the sentinels
    /// (`redis://[:password@]host:port`, or `rediss://` for TLS to the
    /// sentinels and the master).
    #[serde(default)]
    pub sentinels: Vec<String>,
    /// `sentinels` read from this file, one URL a line (they may carry
    /// passwords): one of the two.
    #[serde(default)]
    pub sentinels_file: Option<PathBuf>,
    /// Redis Sentinel: the name the sentinels monitor the master by.
    #[serde(default)]
    pub master_name: Option<String>,
    /// Redis Sentinel: the master's ACL user.
    #[serde(default)]
    pub master_username: Option<String>,
    /// Redis Sentinel: the master's password.
    #[serde(default)]
    pub master_password: Option<String>,
    /// `master_password` read from this file (a mounted secret): one of the two.
    #[serde(default)]
    pub master_password_file: Option<PathBuf>,
    /// Redis Sentinel: the master's database number.
    #[serde(default)]
    pub master_db: i64,
    /// Redis Cluster, instead of `url`: some of its nodes (`redis://` or
    /// `rediss://` URLs, password in each); the others are discovered.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// `cluster` read from this file, one URL a line: one of the two.
    #[serde(default)]
    pub cluster_file: Option<PathBuf>,
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
            sentinels: Vec::new(),
            sentinels_file: None,
            master_name: None,
            master_username: None,
            master_password: None,
            master_password_file: None,
            master_db: 0,
            cluster: Vec::new(),
            cluster_file: None,
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
        let mut c = self.endpoint()?;
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

    /// One server (`url`), a Sentinel set (`sentinels`) or a Cluster
    /// (`cluster`): exactly one of them.
    #[cfg(feature = "redis")]
    fn endpoint(&self) -> Result<backend_redis::RedisLocksConfig, ConfigError> {
        let given: Vec<&str> = [
            ("url", self.url.is_some()),
            ("sentinels", !self.sentinels.is_empty()),
            ("cluster", !self.cluster.is_empty()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        let sentinel_only = [
            ("master_name", self.master_name.is_some()),
            ("master_username", self.master_username.is_some()),
            ("master_password", self.master_password.is_some()),
            ("master_db", self.master_db != 0),
        ];
        if self.sentinels.is_empty()
            && let Some((k, _)) = sentinel_only.iter().find(|(_, set)| *set)
        {
            return Err(ConfigError::new(
                format!("locks.{k}"),
                "is for Redis Sentinel: set locks.sentinels too",
            ));
        }
        match given.as_slice() {
            ["url"] => Ok(backend_redis::RedisLocksConfig::new(
                self.url.clone().unwrap_or_default(),
            )),
            ["sentinels"] => {
                let name = self.master_name.clone().ok_or_else(|| {
                    ConfigError::new(
                        "locks.master_name",
                        "Redis Sentinel needs the name the sentinels monitor the master by",
                    )
                })?;
                let mut c = backend_redis::RedisLocksConfig::sentinel(self.sentinels.clone(), name);
                if let backend_redis::Endpoint::Sentinel(s) = &mut c.endpoint {
                    s.master_username = self.master_username.clone();
                    s.master_password = self.master_password.clone();
                    s.master_db = self.master_db;
                }
                Ok(c)
            }
            ["cluster"] => Ok(backend_redis::RedisLocksConfig::cluster(
                self.cluster.clone(),
            )),
            [] => Err(ConfigError::new(
                "locks.url",
                "backend = \"redis\" needs a url (or url_file, sentinels, cluster)",
            )),
            _ => Err(ConfigError::new(
                format!("locks.{}", given[1]),
                format!("set one of {}, not several", given.join(", ")),
            )),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LockBackend {
    Memory,
    Redis,
}
