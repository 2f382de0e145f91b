//! The configuration model: one TOML file plus `POPGATE_` environment
//! overrides (`__` between levels), loaded with figment, then validated
//! before anything listens. Every error names the key it is about.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Deserializer};

/// The embedded default: everything local, no other service needed.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub listeners: Vec<ListenerSection>,
    #[serde(default)]
    pub locks: LocksSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    #[serde(default)]
    pub tenants: Vec<TenantSection>,
    /// The default certificate for TLS listeners.
    #[serde(default)]
    pub tls: Option<CertSection>,
    /// The file this was read from (`None`: the embedded default).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CertSection {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

impl CertSection {
    pub fn files(&self) -> popgate_server::tls::CertFiles {
        popgate_server::tls::CertFiles {
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone(),
        }
    }
}

impl Config {
    /// Every certificate the process serves: the default and the tenants'.
    pub fn tls_settings(&self) -> Option<popgate_server::tls::TlsSettings> {
        let default = self.tls.as_ref().map(CertSection::files);
        let by_domains: Vec<_> = self
            .tenants
            .iter()
            .filter_map(|t| t.tls.as_ref().map(|c| (t.domains.clone(), c.files())))
            .collect();
        (default.is_some() || !by_domains.is_empty()).then_some(popgate_server::tls::TlsSettings {
            default,
            by_domains,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub hostname: String,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Idle time allowed before login.
    #[serde(deserialize_with = "duration")]
    pub auth_timeout: Duration,
    /// Idle time allowed after login; RFC 1939 wants at least 10 minutes.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// How long a write may wait for a client that does not read.
    #[serde(deserialize_with = "duration")]
    pub send_timeout: Duration,
    pub max_auth_failures: u32,
    pub max_bad_commands: u32,
    #[serde(deserialize_with = "duration")]
    pub auth_failure_delay: Duration,
    /// A started command line, a TLS handshake or a PROXY header must
    /// complete within this time.
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Connections open at once in this process.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// Failed-login penalty: the delay after one recent failure (doubling
    /// with each further one, per client address and per account).
    #[serde(deserialize_with = "duration")]
    pub auth_penalty: Duration,
    #[serde(deserialize_with = "duration")]
    pub auth_penalty_max: Duration,
    /// The whole AUTHORIZATION state, from the greeting to verified
    /// credentials, must end within this time, whatever the client sends.
    #[serde(deserialize_with = "duration")]
    pub login_timeout: Duration,
    /// Lines a client may send before login, besides failed logins and bad
    /// commands (capped by max_auth_failures and max_bad_commands).
    pub max_login_commands: u32,
    /// Show `IMPLEMENTATION popgate x.y.z` in CAPA.
    pub show_version: bool,
    pub log_format: LogFormat,
    /// A tracing filter: `info`, `popgate=debug,info`, ...
    pub log_level: String,
    /// `[server.password_hashing]`: hashing slots and cost caps.
    pub password_hashing: PasswordHashingSection,
}

/// `[server.password_hashing]`: how many password checks run at once, how
/// long a login waits for one, and what a stored hash may cost (a hash
/// above a cap is refused unhashed: the login fails like a wrong password).
/// argon2's memory cap times `slots` is the most that hashing allocates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordHashingSection {
    /// Password checks at once; default: one per CPU, 2 to 8.
    pub slots: Option<usize>,
    /// The most slots one tenant holds at once; default: slots - 1 (at least 1).
    pub tenant_slots: Option<usize>,
    /// How long a login waits for a slot before `-ERR [SYS/TEMP]`.
    #[serde(deserialize_with = "duration")]
    pub wait: Duration,
    /// argon2 `m`: `64MiB`, `65536KiB`, `1GiB`.
    #[serde(deserialize_with = "byte_size")]
    pub argon2_max_memory: u64,
    /// argon2 `t`.
    pub argon2_max_time: u32,
    /// argon2 `p`.
    pub argon2_max_lanes: u32,
    /// bcrypt cost (4 to 31).
    pub bcrypt_max_cost: u32,
    /// SHA-crypt `rounds=` (1000 to 999999999; 5000 when a hash has none).
    pub sha_crypt_max_rounds: u32,
}

impl Default for PasswordHashingSection {
    fn default() -> Self {
        let p = popgate_auth::HashPoolConfig::default();
        PasswordHashingSection {
            slots: None,
            tenant_slots: None,
            wait: p.wait,
            argon2_max_memory: u64::from(p.limits.argon2_max_memory_kib) * 1024,
            argon2_max_time: p.limits.argon2_max_time,
            argon2_max_lanes: p.limits.argon2_max_lanes,
            bcrypt_max_cost: p.limits.bcrypt_max_cost,
            sha_crypt_max_rounds: p.limits.sha_crypt_max_rounds,
        }
    }
}

impl PasswordHashingSection {
    /// The pool's settings (validated by [`Config::validate`]).
    pub fn pool_config(&self) -> popgate_auth::HashPoolConfig {
        popgate_auth::HashPoolConfig {
            slots: self
                .slots
                .unwrap_or_else(popgate_auth::HashPoolConfig::default_slots),
            tenant_slots: self.tenant_slots,
            wait: self.wait,
            limits: popgate_auth::scheme::CostLimits {
                argon2_max_memory_kib: u32::try_from(self.argon2_max_memory / 1024)
                    .unwrap_or(u32::MAX),
                argon2_max_time: self.argon2_max_time,
                argon2_max_lanes: self.argon2_max_lanes,
                bcrypt_max_cost: self.bcrypt_max_cost,
                sha_crypt_max_rounds: self.sha_crypt_max_rounds,
            },
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("server.password_hashing.{k}");
        if let Some(n) = self.slots
            && !(1..=1024).contains(&n)
        {
            return Err(ConfigError::new(key("slots"), "must be 1 to 1024"));
        }
        if let Some(t) = self.tenant_slots
            && !(1..=self.pool_config().slots).contains(&t)
        {
            return Err(ConfigError::new(
                key("tenant_slots"),
                "must be at least 1 and at most slots",
            ));
        }
        if self.wait.is_zero() {
            return Err(ConfigError::new(key("wait"), "must be more than 0s"));
        }
        let m = self.argon2_max_memory;
        if m < 8 * 1024 || !m.is_multiple_of(1024) || m / 1024 > u64::from(u32::MAX) {
            return Err(ConfigError::new(
                key("argon2_max_memory"),
                "must be a whole number of KiB, at least 8KiB",
            ));
        }
        if self.argon2_max_time == 0 || self.argon2_max_lanes == 0 {
            return Err(ConfigError::new(
                key("argon2_max_time / argon2_max_lanes"),
                "must be at least 1",
            ));
        }
        if !(4..=31).contains(&self.bcrypt_max_cost) {
            return Err(ConfigError::new(key("bcrypt_max_cost"), "must be 4 to 31"));
        }
        if !(1000..=999_999_999).contains(&self.sha_crypt_max_rounds) {
            return Err(ConfigError::new(
                key("sha_crypt_max_rounds"),
                "must be 1000 to 999999999",
            ));
        }
        Ok(())
    }
}

/// Reads `64MiB`, `512KiB`, `1GiB` (also `K`, `M`, `G`, `KB`, `MB`, `GB`,
/// all binary) or `65536B` into bytes. A bare number is refused: argon2's
/// `m` is in KiB and a setting in bytes would be easy to misread.
fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Number(n) => {
            return Err(serde::de::Error::custom(format!(
                "{n} has no unit: write it like \"64MiB\" or \"65536KiB\""
            )));
        }
        Raw::Text(t) => t,
    };
    parse_byte_size(&text).map_err(serde::de::Error::custom)
}

pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size (like 64MiB, 65536KiB, 1GiB)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

impl Default for ServerSection {
    fn default() -> Self {
        let s = popgate_server::SessionConfig::default();
        let l = popgate_server::limits::LimitsConfig::default();
        ServerSection {
            hostname: "localhost".into(),
            shutdown_grace: Duration::from_secs(30),
            auth_timeout: s.auth_timeout,
            idle_timeout: s.idle_timeout,
            send_timeout: s.send_timeout,
            max_auth_failures: s.max_auth_failures,
            max_bad_commands: s.max_bad_commands,
            auth_failure_delay: s.auth_failure_delay,
            command_timeout: s.command_timeout,
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            auth_penalty: l.penalty_base,
            auth_penalty_max: l.penalty_max,
            login_timeout: l.login_timeout,
            max_login_commands: l.max_login_commands,
            show_version: true,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            password_hashing: PasswordHashingSection::default(),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: String,
    #[serde(default = "tls_none")]
    pub tls: TlsSetting,
    #[serde(default)]
    pub plaintext_auth: bool,
    #[serde(default)]
    pub default_tenant: Option<String>,
    /// Expect a PROXY v1/v2 header from one of `trusted_proxies`.
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn tls_none() -> TlsSetting {
    TlsSetting::None
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsSetting {
    None,
    Starttls,
    Implicit,
}

/// `[limits]`: how clients are grouped for the connection caps and the
/// failed-login penalty, and how long a good login is remembered.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// IPv4 clients are counted by this many leading bits (1 to 32).
    pub ipv4_prefix: u8,
    /// IPv6 clients are counted by this many leading bits (1 to 128).
    pub ipv6_prefix: u8,
    /// After a successful login, the account's own failures from that
    /// prefix are the only ones that slow its logins from there, this long.
    #[serde(deserialize_with = "duration")]
    pub known_good_for: Duration,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let l = popgate_server::limits::LimitsConfig::default();
        LimitsSection {
            ipv4_prefix: l.ipv4_prefix,
            ipv6_prefix: l.ipv6_prefix,
            known_good_for: l.known_good_for,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocksSection {
    pub backend: LockBackend,
    /// Redis: `redis://[:password@]host:port[/db]` or `rediss://...`.
    #[serde(default)]
    pub url: Option<String>,
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
    /// The Redis backend's settings, checked; `None` for the memory backend.
    pub fn redis_config(&self) -> Result<Option<backend_redis::RedisLocksConfig>, ConfigError> {
        if self.backend != LockBackend::Redis {
            return Ok(None);
        }
        let url = self
            .url
            .clone()
            .ok_or_else(|| ConfigError::new("locks.url", "backend = \"redis\" needs a url"))?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub address: String,
    /// When set, /metrics wants `Authorization: Bearer <token>`; /healthz
    /// and /readyz stay open. Absent: /metrics is open.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// How often every tenant's store and directory, and the lock service,
    /// are pinged for `popgate_backend_up` and `/backends`.
    #[serde(
        default = "default_backend_check_interval",
        deserialize_with = "duration"
    )]
    pub backend_check_interval: Duration,
    /// How long one such ping may take before the backend counts as down.
    #[serde(
        default = "default_backend_check_timeout",
        deserialize_with = "duration"
    )]
    pub backend_check_timeout: Duration,
}

fn default_backend_check_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_backend_check_timeout() -> Duration {
    Duration::from_secs(2)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
    pub auth: AuthSection,
    pub store: StoreSection,
    #[serde(default)]
    pub max_sessions: Option<u32>,
    /// RFC 2449 LOGIN-DELAY in seconds.
    #[serde(default)]
    pub login_delay: Option<u32>,
    /// RFC 2449 EXPIRE: days, or "never".
    #[serde(default)]
    pub expire: Option<ExpireSetting>,
    /// This tenant's certificate, served to clients whose SNI names one of
    /// its domains or a subdomain of one.
    #[serde(default)]
    pub tls: Option<CertSection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireSetting {
    Days(u32),
    Never,
}

impl<'de> Deserialize<'de> for ExpireSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Days(u32),
            Text(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Days(n)) => Ok(ExpireSetting::Days(n)),
            Ok(Raw::Text(t)) if t.eq_ignore_ascii_case("never") => Ok(ExpireSetting::Never),
            _ => Err(serde::de::Error::custom(
                "expected a number of days or \"never\"",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthSection {
    PasswdFile {
        path: PathBuf,
    },
    /// Users in PostgreSQL (the `users` table of the migrations).
    Postgres(crate::pg::PgSection),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StoreSection {
    Maildir {
        path: String,
        #[serde(default = "default_uidl_format")]
        uidl_format: String,
        /// Follow symlinks below the template's fixed prefix (a customer who
        /// can write a Maildir's parents could link `cur` to another's).
        #[serde(default)]
        follow_symlinks: bool,
    },
    /// Mail in PostgreSQL (`popgate migrate` makes the schema).
    Postgres(crate::pg::PgSection),
    /// Mail in an S3 bucket, one object per message.
    S3(S3Section),
}

fn default_uidl_format() -> String {
    "%08Xu%08Xv".into()
}

/// `store = { kind = "s3", bucket = "mail", ... }`. Without the two keys,
/// credentials come from the standard AWS chain (`AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`, profile, web identity / IRSA, ECS, EC2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    pub bucket: String,
    #[serde(default = "s3_default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(
        default = "s3_default_connect_timeout",
        deserialize_with = "s3_connect_timeout"
    )]
    pub connect_timeout: Duration,
    #[serde(
        default = "s3_default_request_timeout",
        deserialize_with = "s3_request_timeout"
    )]
    pub request_timeout: Duration,
    #[serde(
        default = "s3_default_read_timeout",
        deserialize_with = "s3_read_timeout"
    )]
    pub read_timeout: Duration,
    #[serde(default = "s3_default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "s3_default_list_page_size")]
    pub list_page_size: u32,
}

// Inside a `kind`-tagged table figment can only name the table, so these
// errors name the field themselves.
fn s3_connect_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d).map_err(|e| serde::de::Error::custom(format!("connect_timeout: {e}")))
}
fn s3_request_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d).map_err(|e| serde::de::Error::custom(format!("request_timeout: {e}")))
}
fn s3_read_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d).map_err(|e| serde::de::Error::custom(format!("read_timeout: {e}")))
}
fn s3_defaults() -> store_s3::S3Config {
    store_s3::S3Config::new("")
}
fn s3_default_prefix() -> String {
    s3_defaults().prefix
}
fn s3_default_connect_timeout() -> Duration {
    s3_defaults().connect_timeout
}
fn s3_default_request_timeout() -> Duration {
    s3_defaults().request_timeout
}
fn s3_default_read_timeout() -> Duration {
    s3_defaults().read_timeout
}
fn s3_default_max_attempts() -> u32 {
    s3_defaults().max_attempts
}
fn s3_default_list_page_size() -> u32 {
    s3_defaults().list_page_size
}

impl S3Section {
    pub fn store_config(&self) -> store_s3::S3Config {
        let credentials = match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Some(store_s3::StaticCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
            }),
            _ => None,
        };
        store_s3::S3Config {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            force_path_style: self.force_path_style,
            credentials,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            read_timeout: self.read_timeout,
            max_attempts: self.max_attempts,
            list_page_size: self.list_page_size,
        }
    }

    /// `key` is the section's own key, like `tenants[0].store`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    format!("{key}.secret_access_key"),
                    "missing: access_key_id needs it (or leave both out for the AWS credential chain)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{key}.access_key_id"),
                    "missing: secret_access_key needs it (or leave both out for the AWS credential chain)",
                ));
            }
            _ => {}
        }
        self.store_config()
            .validate()
            .map_err(|(field, e)| ConfigError::new(format!("{key}.{field}"), e))
    }
}

/// A configuration problem, tied to its key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The environment variable that names the config file when `--config` is
/// not given.
pub const CONFIG_ENV: &str = "POPGATE_CONFIG";

/// Sections whose keys the environment can set: `POPGATE_SERVER__HOSTNAME`.
const ENV_TABLES: [&str; 5] = ["server", "limits", "locks", "metrics", "tls"];
/// Arrays of tables whose existing entries the environment can change:
/// `POPGATE_TENANTS__0__LOGIN_DELAY` (it cannot add an entry).
const ENV_ARRAYS: [&str; 2] = ["listeners", "tenants"];

/// Loads the file (or the embedded default) and the environment overrides.
///
/// Only `POPGATE_<SECTION>__<KEY>` variables of the sections above are
/// config; every other `POPGATE_*` variable (`POPGATE_LOG`,
/// `POPGATE_CONFIG`, the `POPGATE_SERVICE_HOST`/`POPGATE_PORT_*` that
/// Kubernetes injects for a Service named `popgate`) is left alone.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    load_with_env(file, std::env::vars())
}

/// [`load`] with the environment given, for tests.
pub fn load_with_env(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("POPGATE_"))
        .collect();
    let from_env = env
        .iter()
        .find(|(k, _)| k == CONFIG_ENV)
        .map(|(_, v)| PathBuf::from(v));
    let (base, origin) = match file.map(Path::to_path_buf).or(from_env) {
        Some(path) => {
            if !path.is_file() {
                let key = if file.is_some() {
                    "--config"
                } else {
                    CONFIG_ENV
                };
                return Err(ConfigError::new(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
            (Figment::from(Toml::file(&path)), Some(path))
        }
        None => (Figment::from(Toml::string(DEFAULT_CONFIG)), None),
    };
    let mut figment = base;
    for (name, raw) in &env {
        let key = name["POPGATE_".len()..].to_ascii_lowercase();
        // A whole section or array: `POPGATE_LISTENERS=[{address = ...}]`.
        let section = key.split_once("__").map_or(key.as_str(), |(s, _)| s);
        let whole = section == key;
        if ENV_TABLES.contains(&section) && !whole || ENV_ARRAYS.contains(&section) && whole {
            let patch = figment::util::nest(&key.replace("__", "."), env_value(raw));
            figment = figment.merge(figment::providers::Serialized::defaults(patch));
        }
    }
    for array in ENV_ARRAYS {
        if let Some(value) = env_array_overrides(&figment, array, &env)? {
            figment = figment.merge(figment::providers::Serialized::default(array, value));
        }
    }
    let mut config = figment.extract::<Config>().map_err(figment_error)?;
    config.file = origin;
    Ok(config)
}

/// A variable's value as figment's `Env` reads it: numbers, booleans,
/// arrays and tables are typed, anything else is a string.
fn env_value(raw: &str) -> figment::value::Value {
    raw.parse()
        .unwrap_or_else(|_| figment::value::Value::from(raw.to_string()))
}

/// Applies `POPGATE_<ARRAY>__<index>__<key...>` variables to the entries of
/// an array of tables that the file defines; `None` when none is set.
fn env_array_overrides(
    base: &Figment,
    array: &str,
    env: &[(String, String)],
) -> Result<Option<figment::value::Value>, ConfigError> {
    use figment::value::Value;
    let prefix = format!("POPGATE_{}__", array.to_ascii_uppercase());
    let mut entries = None;
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let entries = match &mut entries {
            Some(e) => e,
            None => entries.insert(match base.find_value(array) {
                Ok(Value::Array(_, items)) => items,
                _ => Vec::new(),
            }),
        };
        let (index, path) = rest.split_once("__").unwrap_or((rest, ""));
        let slot = index
            .parse::<usize>()
            .ok()
            .and_then(|i| entries.get_mut(i).map(|v| (i, v)));
        let Some((i, entry)) = slot else {
            return Err(ConfigError::new(
                name.clone(),
                format!(
                    "names no entry of the file's [[{array}]] ({} of them, counted from 0): \
                     the environment can change an entry, not add one",
                    entries.len()
                ),
            ));
        };
        if path.is_empty() {
            return Err(ConfigError::new(
                name.clone(),
                format!("names {array}[{i}] but no key in it (like {prefix}{i}__NAME)"),
            ));
        }
        let key = path.to_ascii_lowercase().replace("__", ".");
        let patch = figment::util::nest(&key, env_value(raw));
        let old = std::mem::replace(entry, Value::from(figment::value::Dict::new()));
        *entry = figment::Figment::from(figment::providers::Serialized::defaults(old))
            .merge(figment::providers::Serialized::defaults(patch))
            .extract::<Value>()
            .map_err(|e| ConfigError::new(name.clone(), e.to_string()))?;
    }
    Ok(entries.map(Value::from))
}

fn figment_error(e: figment::Error) -> ConfigError {
    use figment::error::Kind;
    // For an unknown field inside a `kind`-tagged table, figment's path
    // stops at the table: the field is added here.
    let mut path = e.path.clone();
    if let Kind::UnknownField(field, _) = &e.kind
        && path.last() != Some(field)
    {
        path.push(field.clone());
    }
    let key = dotted_key(&path);
    let mut message = match &e.kind {
        Kind::UnknownField(field, expected) => unknown("key", field, expected),
        Kind::UnknownVariant(value, expected) => unknown("value", value, expected),
        other => other.to_string(),
    };
    if let Some(md) = &e.metadata {
        match &md.source {
            Some(figment::Source::File(file)) => {
                message.push_str(&format!(" (in {}", file.display()));
                if let Some(line) = std::fs::read_to_string(file)
                    .ok()
                    .and_then(|text| line_of(&text, &path))
                {
                    message.push_str(&format!(", line {line}"));
                }
                message.push(')');
            }
            _ if md.name == "TOML source string" => {
                message.push_str(" (in the embedded default configuration)");
            }
            // The environment's overrides are merged as serialized values.
            _ => message.push_str(&format!(" (from the environment: {})", env_name(&path))),
        }
    }
    ConfigError::new(key, message)
}

/// `tenants.0.expire` as validation says it: `tenants[0].expire`.
fn dotted_key(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) && !key.is_empty() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    if key.is_empty() {
        key = "config".into();
    }
    key
}

/// The variable that sets a key: `POPGATE_TENANTS__0__LOGIN_DELAY`.
fn env_name(path: &[String]) -> String {
    format!("POPGATE_{}", path.join("__").to_ascii_uppercase())
}

/// `unknown key "hostnme" (did you mean "hostname"?)`; without a close
/// match, the expected names (a table of popgate's has at most a score).
fn unknown(what: &str, given: &str, expected: &[&str]) -> String {
    match did_you_mean(given, expected) {
        Some(close) => format!("unknown {what} \"{given}\" (did you mean \"{close}\"?)"),
        None if expected.is_empty() => {
            format!("unknown {what} \"{given}\" (none is expected here)")
        }
        None => format!(
            "unknown {what} \"{given}\" (expected one of: {})",
            expected.join(", ")
        ),
    }
}

/// The expected name closest to `given`, if it is close: a few typos
/// away (case aside), or a part of it (`plaintext` for `plaintext_auth`).
fn did_you_mean<'a>(given: &str, expected: &[&'a str]) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for &candidate in expected {
        let d = edit_distance(&given, &candidate.to_ascii_lowercase());
        let bound = (candidate.len().max(given.len()) / 4).clamp(1, 3);
        let prefix = given.len() >= 4
            && (candidate.starts_with(given.as_str()) || given.starts_with(candidate));
        if (d <= bound || prefix) && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of two neighbours each cost 1 (`hostnmae` is one
/// from `hostname`).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows: two back (for transpositions), the previous, this one.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// The line (from 1) of a TOML file where the key at `path` is set, as
/// far as a line-by-line look can tell: in the table (`[server]`, the
/// n-th `[[tenants]]`) that holds it, the line that sets the key or the
/// inline table it is in (`auth = { kind = "...", path = "..." }`).
fn line_of(text: &str, path: &[String]) -> Option<usize> {
    let mut table: Vec<String> = Vec::new();
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut found: Option<(usize, usize)> = None; // (table depth, line)
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            let name = name.trim().to_string();
            let i = arrays
                .entry(name.clone())
                .and_modify(|i| *i += 1)
                .or_insert(0);
            table = name.split('.').map(|p| p.trim().to_string()).collect();
            table.push(i.to_string());
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.split('.').map(|p| p.trim().to_string()).collect();
            continue;
        }
        if path.len() <= table.len() || path[..table.len()] != table[..] {
            continue;
        }
        let rest = &path[table.len()..];
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key: Vec<String> = key
            .split('.')
            .map(|p| p.trim().trim_matches('"').to_string())
            .collect();
        let sets = rest.starts_with(&key)
            && (rest.len() == key.len()
                || rest[key.len()..].iter().all(|inner| {
                    value.contains(&format!("{inner} =")) || value.contains(&format!("{inner}="))
                }));
        if sets && found.is_none_or(|(depth, _)| table.len() > depth) {
            found = Some((table.len(), n + 1));
        }
    }
    found.map(|(_, line)| line)
}

impl Config {
    /// Checks what types alone cannot: references, ranges, paths, templates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.hostname.is_empty() || s.hostname.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "server.hostname",
                "must be a host name without spaces",
            ));
        }
        if s.idle_timeout < Duration::from_secs(600) {
            return Err(ConfigError::new(
                "server.idle_timeout",
                "RFC 1939 requires at least 10m",
            ));
        }
        if s.auth_timeout.is_zero() || s.send_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.auth_timeout / send_timeout",
                "must be more than 0s",
            ));
        }
        if s.command_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.command_timeout",
                "must be more than 0s",
            ));
        }
        if s.max_connections == 0 || s.max_connections_per_ip == 0 {
            return Err(ConfigError::new(
                "server.max_connections / max_connections_per_ip",
                "must be at least 1",
            ));
        }
        if s.max_auth_failures == 0 || s.max_bad_commands == 0 {
            return Err(ConfigError::new(
                "server.max_auth_failures / max_bad_commands",
                "must be at least 1",
            ));
        }
        if s.login_timeout <= s.auth_penalty_max {
            return Err(ConfigError::new(
                "server.login_timeout",
                "must be longer than server.auth_penalty_max, or a penalised login could never finish",
            ));
        }
        if s.max_login_commands == 0 {
            return Err(ConfigError::new(
                "server.max_login_commands",
                "must be at least 1",
            ));
        }
        let lim = &self.limits;
        if !(1..=32).contains(&lim.ipv4_prefix) {
            return Err(ConfigError::new("limits.ipv4_prefix", "must be 1 to 32"));
        }
        if !(1..=128).contains(&lim.ipv6_prefix) {
            return Err(ConfigError::new("limits.ipv6_prefix", "must be 1 to 128"));
        }
        if lim.known_good_for < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "limits.known_good_for",
                "must be at least 1s",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&s.log_level)
            .map_err(|e| ConfigError::new("server.log_level", e.to_string()))?;
        s.password_hashing.validate()?;
        let hashing = popgate_auth::HashPool::new(s.password_hashing.pool_config());

        if self.listeners.is_empty() {
            return Err(ConfigError::new(
                "listeners",
                "at least one [[listeners]] entry is needed",
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let key = |k: &str| format!("listeners[{i}].{k}");
            l.address
                .parse::<SocketAddr>()
                .map_err(|e| ConfigError::new(key("address"), format!("{:?}: {e}", l.address)))?;
            if l.tls != TlsSetting::None && self.tls.is_none() {
                return Err(ConfigError::new(
                    key("tls"),
                    "a TLS listener needs the [tls] certificate and private_key",
                ));
            }
            if l.proxy_protocol && l.trusted_proxies.is_empty() {
                return Err(ConfigError::new(
                    key("trusted_proxies"),
                    "proxy_protocol = true needs the proxies' addresses",
                ));
            }
            for p in &l.trusted_proxies {
                p.parse::<popgate_server::proxy::Cidr>()
                    .map_err(|e| ConfigError::new(key("trusted_proxies"), e))?;
            }
            if l.tls == TlsSetting::None && !l.plaintext_auth {
                return Err(ConfigError::new(
                    key("plaintext_auth"),
                    "false on a listener without TLS: nobody could log in (set plaintext_auth = true, or use TLS)",
                ));
            }
            if let Some(t) = &l.default_tenant
                && !self.tenants.iter().any(|x| &x.name == t)
            {
                return Err(ConfigError::new(
                    key("default_tenant"),
                    format!("no tenant is named {t:?}"),
                ));
            }
        }
        let mut bound = std::collections::HashMap::new();
        for (i, l) in self.listeners.iter().enumerate() {
            // Parsed above; the same address twice cannot both be bound.
            if let Ok(addr) = l.address.parse::<SocketAddr>()
                && let Some(j) = bound.insert(addr, i)
            {
                return Err(ConfigError::new(
                    format!("listeners[{i}].address"),
                    format!("{addr} is also listeners[{j}].address"),
                ));
            }
        }
        self.locks.redis_config()?;
        if let Some(m) = &self.metrics {
            let addr = m.address.parse::<SocketAddr>().map_err(|e| {
                ConfigError::new("metrics.address", format!("{:?}: {e}", m.address))
            })?;
            if m.backend_check_interval.is_zero() || m.backend_check_timeout.is_zero() {
                return Err(ConfigError::new(
                    "metrics.backend_check_interval / backend_check_timeout",
                    "must be more than 0s",
                ));
            }
            if let Some(i) = bound.get(&addr) {
                return Err(ConfigError::new(
                    "metrics.address",
                    format!("{addr} is also listeners[{i}].address"),
                ));
            }
            if let Some(t) = &m.bearer_token
                && (t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(ConfigError::new(
                    "metrics.bearer_token",
                    "must be printable ASCII without spaces",
                ));
            }
        }
        if let Some(t) = &self.tls {
            popgate_server::tls::check_pair(&t.files()).map_err(|e| ConfigError::new("tls", e))?;
        }
        for (i, t) in self.tenants.iter().enumerate() {
            if let Some(c) = &t.tls {
                popgate_server::tls::check_pair(&c.files())
                    .map_err(|e| ConfigError::new(format!("tenants[{i}].tls"), e))?;
            }
        }
        if self.tenants.is_empty() {
            return Err(ConfigError::new(
                "tenants",
                "at least one [[tenants]] entry is needed",
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut domains = std::collections::HashMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let key = |k: &str| format!("tenants[{i}].{k}");
            if t.name.is_empty()
                || !t
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::new(
                    key("name"),
                    "letters, digits, '-' and '_' only",
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("{:?} is used by another tenant", t.name),
                ));
            }
            for d in &t.domains {
                let d = d.to_ascii_lowercase();
                if d.is_empty()
                    || !d
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    return Err(ConfigError::new(
                        key("domains"),
                        format!("{d:?} is not a domain name"),
                    ));
                }
                if let Some(other) = domains.insert(d.clone(), t.name.clone()) {
                    return Err(ConfigError::new(
                        key("domains"),
                        format!("{d:?} also belongs to tenant {other:?}"),
                    ));
                }
            }
            if t.domains.is_empty()
                && !self
                    .listeners
                    .iter()
                    .any(|l| l.default_tenant.as_deref() == Some(&t.name))
            {
                return Err(ConfigError::new(
                    key("domains"),
                    "empty, and no listener has this tenant as default_tenant: nobody could log in",
                ));
            }
            if t.max_sessions == Some(0) {
                return Err(ConfigError::new(
                    key("max_sessions"),
                    "must be at least 1 (leave it out for no cap)",
                ));
            }
            match &t.auth {
                AuthSection::PasswdFile { path } => {
                    // Opened with the configured caps, so that its load
                    // warnings (file:line) are about them.
                    directory_passwd_file::PasswdFile::open_with(path, hashing.for_tenant(&t.name))
                        .map_err(|e| {
                            ConfigError::new(key("auth.path"), format!("{}: {e}", path.display()))
                        })?;
                }
                AuthSection::Postgres(pg) => pg.validate(&key("auth"))?,
            }
            match &t.store {
                StoreSection::Postgres(pg) => pg.validate(&key("store"))?,
                StoreSection::S3(s3) => s3.validate(&key("store"))?,
                StoreSection::Maildir {
                    path, uidl_format, ..
                } => {
                    popgate_store::validate_template(path)
                        .map_err(|e| ConfigError::new(key("store.path"), e))?;
                    if !path.contains("%n") && !path.contains("%u") {
                        return Err(ConfigError::new(
                            key("store.path"),
                            "must contain %n or %u, or every user shares one Maildir",
                        ));
                    }
                    let root = static_prefix(path);
                    if !root.is_dir() {
                        return Err(ConfigError::new(
                            key("store.path"),
                            format!("{} does not exist or is not a directory", root.display()),
                        ));
                    }
                    store_maildir::validate_uidl_format(uidl_format)
                        .map_err(|e| ConfigError::new(key("store.uidl_format"), e))?;
                }
            }
        }
        self.check_shared_mailboxes()
    }

    /// Refuses two tenants whose stores would put two logins in one mailbox:
    /// the same Maildir path template, or the same bucket and prefix, without
    /// the domain in it (`%d`, or `%u`, the whole login), or with it where a
    /// tenant has no domain (bare logins: `%d` is empty).
    fn check_shared_mailboxes(&self) -> Result<(), ConfigError> {
        let mut seen: std::collections::HashMap<String, (usize, bool)> = Default::default();
        for (i, t) in self.tenants.iter().enumerate() {
            let (place, template) = match &t.store {
                StoreSection::Maildir { path, .. } => (format!("maildir {path}"), path.as_str()),
                StoreSection::S3(s3) => (
                    format!(
                        "s3 {} {} {}",
                        s3.endpoint.as_deref().unwrap_or("aws"),
                        s3.bucket,
                        s3.prefix
                    ),
                    s3.prefix.as_str(),
                ),
                // Rows are keyed by tenant: tenants never share a mailbox.
                StoreSection::Postgres(_) => continue,
            };
            let by_domain =
                (template.contains("%d") || template.contains("%u")) && !t.domains.is_empty();
            if let Some(&(j, other_by_domain)) = seen.get(&place)
                && !(by_domain && other_by_domain)
            {
                return Err(ConfigError::new(
                    format!("tenants[{i}].store"),
                    format!(
                        "the same mailboxes as tenants[{j}] ({:?}): bob of one tenant would read and \
                         delete bob's mail of the other; put %d in the template, or give each tenant \
                         its own path",
                        self.tenants[j].name
                    ),
                ));
            }
            seen.insert(place, (i, by_domain));
        }
        Ok(())
    }
}

/// The directory part of a path template before its first variable.
fn static_prefix(template: &str) -> PathBuf {
    let fixed = &template[..template.find('%').unwrap_or(template.len())];
    match fixed.rfind('/') {
        Some(0) => PathBuf::from("/"),
        Some(i) => PathBuf::from(&fixed[..i]),
        None => PathBuf::from("."),
    }
}

/// Reads `30s`, `10m`, `2h`, `1d`, `500ms`, or a plain number of seconds.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 30s, 10m, 1h, 500ms)"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Config, ConfigError> {
        Figment::from(Toml::string(toml))
            .extract::<Config>()
            .map_err(figment_error)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn redis_locks_settings() {
        let c = parse("[locks]\nbackend = \"redis\"\nurl = \"redis://:pw@127.0.0.1:6379\"\nttl = \"10s\"\nwait = \"250ms\"\n").unwrap();
        let r = c.locks.redis_config().unwrap().unwrap();
        assert_eq!(
            (r.ttl, r.wait, r.key_prefix.as_str()),
            (
                Duration::from_secs(10),
                Duration::from_millis(250),
                "popgate"
            )
        );
        let e = parse("[locks]\nbackend = \"redis\"\n")
            .unwrap()
            .locks
            .redis_config()
            .unwrap_err();
        assert_eq!(e.key, "locks.url");
        let e = parse("[locks]\nbackend = \"redis\"\nurl = \"http://x\"\n")
            .unwrap()
            .locks
            .redis_config()
            .unwrap_err();
        assert_eq!(e.key, "locks.url");
        let e = parse("[locks]\nbackend = \"redis\"\nurl = \"redis://h\"\nttl = \"100ms\"\n")
            .unwrap()
            .locks
            .redis_config()
            .unwrap_err();
        assert_eq!(e.key, "locks.ttl");
        let e = parse("[locks]\nbackend = \"redis\"\nurl = \"redis://h\"\nkey_prefix = \"a b\"\n")
            .unwrap()
            .locks
            .redis_config()
            .unwrap_err();
        assert_eq!(e.key, "locks.key_prefix");
        assert!(
            parse("[locks]\nbackend = \"memory\"\n")
                .unwrap()
                .locks
                .redis_config()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn s3_store_settings() {
        let tenant = |store: &str| {
            format!(
                "[[tenants]]\nname = \"a\"\nauth = {{ kind = \"passwd-file\", path = \"/p\" }}\nstore = {{ kind = \"s3\", {store} }}\n"
            )
        };
        let c = parse(&tenant("bucket = \"mail\", read_timeout = \"2s\"")).unwrap();
        let StoreSection::S3(s3) = &c.tenants[0].store else {
            panic!("not s3")
        };
        s3.validate("tenants[0].store").unwrap();
        let sc = s3.store_config();
        assert_eq!(
            (sc.prefix.as_str(), sc.read_timeout),
            ("%d/%n/", Duration::from_secs(2))
        );
        assert!(sc.credentials.is_none(), "no keys: the AWS chain");
        let check = |store: &str| {
            let c = parse(&tenant(store))?;
            let StoreSection::S3(s3) = &c.tenants[0].store else {
                panic!("not s3")
            };
            s3.validate("tenants[0].store")
        };
        let key = |store: &str| check(store).unwrap_err().key;
        assert_eq!(
            key("bucket = \"mail\", prefix = \"%n\""),
            "tenants[0].store.prefix"
        );
        assert_eq!(
            key("bucket = \"mail\", access_key_id = \"k\""),
            "tenants[0].store.secret_access_key"
        );
        assert_eq!(
            key("bucket = \"mail\", endpoint = \"minio:9000\""),
            "tenants[0].store.endpoint"
        );
        assert_eq!(key("bucket = \"\""), "tenants[0].store.bucket");
        let e = check("bucket = \"mail\", connect_timeout = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("connect_timeout"), "{e}");
        let e = check("bucket = \"mail\", bukket = \"x\"").unwrap_err();
        assert!(e.to_string().contains("bukket"), "{e}");
    }

    #[test]
    fn environment_sets_known_sections_and_leaves_the_rest() {
        let env = |vars: &[(&str, &str)]| {
            load_with_env(
                None,
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        // What Kubernetes injects for a Service named `popgate`, and the
        // variables popgate reads itself, are no config keys.
        let c = env(&[
            ("POPGATE_PORT", "tcp://10.0.0.1:110"),
            ("POPGATE_SERVICE_HOST", "10.0.0.1"),
            ("POPGATE_PORT_110_TCP_ADDR", "10.0.0.1"),
            ("POPGATE_LOG", "debug"),
            ("POPGATE_SERVER__MAX_BAD_COMMANDS", "5"),
            ("POPGATE_SERVER__LOG_FORMAT", "json"),
            ("POPGATE_TENANTS__0__LOGIN_DELAY", "60"),
            ("POPGATE_LISTENERS__0__ADDRESS", "127.0.0.1:1110"),
        ])
        .unwrap();
        assert_eq!(c.server.max_bad_commands, 5);
        assert_eq!(c.server.log_format, LogFormat::Json);
        assert_eq!(c.tenants[0].login_delay, Some(60));
        assert_eq!(c.tenants[0].name, "local", "the rest of the entry stays");
        assert_eq!(c.listeners[0].address, "127.0.0.1:1110");
        assert!(c.listeners[0].plaintext_auth);
        // A whole array at once, then an entry of it by index.
        let c = env(&[
            (
                "POPGATE_LISTENERS",
                r#"[{address = "127.0.0.1:1111", plaintext_auth = true}, {address = "127.0.0.1:1112", plaintext_auth = true}]"#,
            ),
            ("POPGATE_LISTENERS__1__DEFAULT_TENANT", "local"),
        ])
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].address, "127.0.0.1:1111");
        assert_eq!(c.listeners[1].default_tenant.as_deref(), Some("local"));
        // A mistyped key of a known section is still an error, named.
        let e = env(&[("POPGATE_SERVER__HOSTNME", "x")]).unwrap_err();
        assert!(e.to_string().contains("hostnme"), "{e}");
        // An entry the file does not have cannot be made from the environment.
        let e = env(&[("POPGATE_TENANTS__3__NAME", "x")]).unwrap_err();
        assert_eq!(e.key, "POPGATE_TENANTS__3__NAME", "{e}");
        let e = env(&[("POPGATE_CONFIG", "/nonexistent/popgate.toml")]).unwrap_err();
        assert_eq!(e.key, "POPGATE_CONFIG", "{e}");
    }

    #[test]
    fn embedded_default_parses() {
        let c = parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.listeners[0].address, "127.0.0.1:1100");
        assert_eq!(c.locks.backend, LockBackend::Memory);
        assert_eq!(c.metrics.unwrap().address, "127.0.0.1:9100");
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let e = parse("[server]\nhostnme = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("hostnme"), "{e}");
        let e = parse("[server]\nmax_auth_failures = \"many\"\n").unwrap_err();
        assert_eq!(e.key, "server.max_auth_failures", "{e}");
        let e = parse("[[tenants]]\nname = \"a\"\nexpire = \"sometimes\"\n").unwrap_err();
        assert_eq!(e.key, "tenants[0].expire", "{e}");
        assert!(e.message.contains("days or \"never\""), "{e}");
        let e = parse("[server]\nidle_timeout = \"soon\"\n").unwrap_err();
        assert!(
            e.key.contains("idle_timeout") && e.message.contains("soon"),
            "{e}"
        );
        let e = parse("[[tenants]]\nname = \"a\"\nauth = { kind = \"ldap\" }\nstore = { kind = \"maildir\", path = \"/m/%n\" }\n")
            .unwrap_err();
        assert!(e.to_string().contains("ldap"), "{e}");
    }

    #[test]
    fn edit_distance_counts_typos() {
        assert_eq!(edit_distance("hostname", "hostname"), 0);
        assert_eq!(edit_distance("hostnme", "hostname"), 1);
        assert_eq!(edit_distance("hostnmae", "hostname"), 1, "a transposition");
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ca", "abc"), 3, "OSA, not Damerau");
        assert_eq!(
            edit_distance("d\u{e9}j\u{e0}", "deja"),
            2,
            "chars, not bytes"
        );
    }

    #[test]
    fn unknown_names_get_a_suggestion_when_one_is_close() {
        let server = [
            "hostname",
            "shutdown_grace",
            "auth_timeout",
            "idle_timeout",
            "log_level",
        ];
        assert_eq!(did_you_mean("hostnme", &server), Some("hostname"));
        assert_eq!(did_you_mean("HostName", &server), Some("hostname"));
        assert_eq!(did_you_mean("idle_timout", &server), Some("idle_timeout"));
        assert_eq!(
            did_you_mean("log", &server),
            None,
            "too short to be a prefix"
        );
        assert_eq!(did_you_mean("colour", &server), None);
        let listener = ["address", "tls", "plaintext_auth", "default_tenant"];
        assert_eq!(did_you_mean("plaintext", &listener), Some("plaintext_auth"));
        assert_eq!(did_you_mean("tsl", &listener), Some("tls"));
        assert_eq!(did_you_mean("x", &listener), None);
    }

    #[test]
    fn an_unknown_key_is_named_with_a_suggestion_and_the_file_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("popgate.toml");
        std::fs::write(
            &file,
            "# popgate\n[server]\nhostname = \"pop.example\"\nhostnme = \"x\"\n",
        )
        .unwrap();
        let e = load_with_env(Some(&file), []).unwrap_err();
        assert_eq!(e.key, "server.hostnme");
        assert_eq!(
            e.message,
            format!(
                "unknown key \"hostnme\" (did you mean \"hostname\"?) (in {}, line 4)",
                file.display()
            )
        );
        assert!(
            !e.message.contains("shutdown_grace"),
            "no list of every key: {e}"
        );

        // Nothing close: the keys of the table are listed.
        std::fs::write(&file, "[server]\ncolour = 1\n").unwrap();
        let e = load_with_env(Some(&file), []).unwrap_err();
        assert!(
            e.message
                .starts_with("unknown key \"colour\" (expected one of: hostname, "),
            "{e}"
        );

        // In the second [[tenants]], inside an inline table of a `kind`.
        let tenant = |n: &str, auth: &str| {
            format!(
                "[[tenants]]\nname = \"{n}\"\nauth = {auth}\nstore = {{ kind = \"maildir\", path = \"/m/%n\" }}\n"
            )
        };
        std::fs::write(
            &file,
            tenant("a", "{ kind = \"passwd-file\", path = \"/p\" }")
                + &tenant("b", "{ kind = \"passwd-file\", paht = \"/p\" }"),
        )
        .unwrap();
        let e = load_with_env(Some(&file), []).unwrap_err();
        assert_eq!(e.key, "tenants[1].auth.paht", "{e}");
        assert!(e.message.contains("(did you mean \"path\"?)"), "{e}");
        assert!(e.message.ends_with(", line 7)"), "{e}");

        // A wrong type names the line too; the environment names the variable.
        std::fs::write(&file, "[server]\n\nmax_auth_failures = \"many\"\n").unwrap();
        let e = load_with_env(Some(&file), []).unwrap_err();
        assert_eq!(e.key, "server.max_auth_failures");
        assert!(e.message.ends_with(", line 3)"), "{e}");
        let e = load_with_env(
            None,
            [("POPGATE_SERVER__HOSTNMAE".to_string(), "x".to_string())],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "server.hostnmae: unknown key \"hostnmae\" (did you mean \"hostname\"?) \
             (from the environment: POPGATE_SERVER__HOSTNMAE)"
        );
        // An unknown kind gets its suggestion as well.
        let e = parse(&tenant("a", "{ kind = \"pasword-file\", path = \"/p\" }")).unwrap_err();
        assert!(
            e.message
                .contains("unknown value \"pasword-file\" (did you mean \"passwd-file\"?)"),
            "{e}"
        );
    }

    #[test]
    fn configs_that_serve_would_refuse_or_that_serve_nobody_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "bob@a.example:{PLAIN}x\n").unwrap();
        let tenant = |name: &str, domains: &str, store: &str| {
            format!(
                "[[tenants]]\nname = \"{name}\"\ndomains = [{domains}]\n\
                 auth = {{ kind = \"passwd-file\", path = \"{}\" }}\nstore = {{ {store} }}\n",
                passwd.display()
            )
        };
        let listener =
            |addr: &str| format!("[[listeners]]\naddress = \"{addr}\"\nplaintext_auth = true\n");
        let root = dir.path().display().to_string();
        let maildir = |t: &str| format!("kind = \"maildir\", path = \"{root}/{t}\"");
        let check = |toml: String| parse(&toml).unwrap().validate();
        let one = listener("127.0.0.1:1100");
        // Two tenants on one template without the domain share mailboxes.
        let e = check(format!(
            "{one}{}{}",
            tenant("a", "\"a.example\"", &maildir("%n/Maildir")),
            tenant("b", "\"b.example\"", &maildir("%n/Maildir"))
        ))
        .unwrap_err();
        assert_eq!(e.key, "tenants[1].store", "{e}");
        assert!(e.message.contains("tenants[0]"), "{e}");
        let s3 = "kind = \"s3\", bucket = \"mail\", prefix = \"%n/\"";
        let e = check(format!(
            "{one}{}{}",
            tenant("a", "\"a.example\"", s3),
            tenant("b", "\"b.example\"", s3)
        ))
        .unwrap_err();
        assert_eq!(e.key, "tenants[1].store", "{e}");
        // With the domain in it, one template serves every tenant apart.
        check(format!(
            "{one}{}{}",
            tenant("a", "\"a.example\"", &maildir("%d/%n")),
            tenant("b", "\"b.example\"", &maildir("%d/%n"))
        ))
        .unwrap();
        // A tenant without domains that no listener defaults to serves nobody.
        let e = check(format!("{one}{}", tenant("a", "", &maildir("%d/%n")))).unwrap_err();
        assert_eq!(e.key, "tenants[0].domains", "{e}");
        let a = tenant("a", "\"a.example\"", &maildir("%d/%n"));
        // Two listeners, or a listener and metrics, on one address.
        let e = check(format!("{one}{one}{a}")).unwrap_err();
        assert_eq!(e.key, "listeners[1].address", "{e}");
        let e = check(format!("{one}[metrics]\naddress = \"127.0.0.1:1100\"\n{a}")).unwrap_err();
        assert_eq!(e.key, "metrics.address", "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "bob@a.example:{PLAIN}x\n").unwrap();
        let base = |extra: &str, store: &str| {
            format!(
                "[[listeners]]\naddress = \"127.0.0.1:1100\"\nplaintext_auth = true\n{extra}\n\
                 [[tenants]]\nname = \"a\"\ndomains = [\"a.example\"]\n\
                 auth = {{ kind = \"passwd-file\", path = \"{}\" }}\nstore = {{ kind = \"maildir\", path = \"{store}\" }}\n",
                passwd.display()
            )
        };
        let good = format!("{}/%d/%n", dir.path().display());
        parse(&base("", &good)).unwrap().validate().unwrap();

        let e = parse(&base("default_tenant = \"zz\"", &good))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "listeners[0].default_tenant");
        let e = parse(&base("", &format!("{}/%q/%n", dir.path().display())))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "tenants[0].store.path");
        assert!(e.message.contains("%q"));
        let e = parse(&base("", "/nonexistent-popgate/%d/%n"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "tenants[0].store.path");
        let bad_listener = base("", &good).replace("127.0.0.1:1100", "localhost:nope");
        let e = parse(&bad_listener).unwrap().validate().unwrap_err();
        assert_eq!(e.key, "listeners[0].address");
        let mut two = base("", &good);
        two.push_str(&format!(
            "[[tenants]]\nname = \"b\"\ndomains = [\"A.example\"]\nauth = {{ kind = \"passwd-file\", path = \"{}\" }}\n\
             store = {{ kind = \"maildir\", path = \"{good}\" }}\n",
            passwd.display()
        ));
        let e = parse(&two).unwrap().validate().unwrap_err();
        assert_eq!(e.key, "tenants[1].domains");
        let missing = base("", &good).replace(&passwd.display().to_string(), "/nonexistent/passwd");
        let e = parse(&missing).unwrap().validate().unwrap_err();
        assert_eq!(e.key, "tenants[0].auth.path");
    }
}
