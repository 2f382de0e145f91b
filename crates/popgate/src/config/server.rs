//! `[server]`, `[server.password_hashing]` and `[limits]`.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::duration::{byte_size, duration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub hostname: String,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// How often the configuration file (and the certificate files) are
    /// checked for changes, which reload them as SIGHUP does.
    #[serde(deserialize_with = "duration")]
    pub config_check_interval: Duration,
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
    /// How many nice steps below the sessions the hashing threads run
    /// (0 to 19; 0: the same priority).
    pub nice: u8,
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
            nice: p.nice,
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
            nice: self.nice,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if self.nice > 19 {
            return Err(ConfigError::new(key("nice"), "must be 0 to 19"));
        }
        Ok(())
    }
}

impl ServerSection {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.config_check_interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "server.config_check_interval",
                "must be at least 1s",
            ));
        }
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "server.hostname",
                "must be a host name without spaces",
            ));
        }
        if self.idle_timeout < Duration::from_secs(600) {
            return Err(ConfigError::new(
                "server.idle_timeout",
                "RFC 1939 requires at least 10m",
            ));
        }
        if self.auth_timeout.is_zero() || self.send_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.auth_timeout / send_timeout",
                "must be more than 0s",
            ));
        }
        if self.command_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.command_timeout",
                "must be more than 0s",
            ));
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(ConfigError::new(
                "server.max_connections / max_connections_per_ip",
                "must be at least 1",
            ));
        }
        if self.max_auth_failures == 0 || self.max_bad_commands == 0 {
            return Err(ConfigError::new(
                "server.max_auth_failures / max_bad_commands",
                "must be at least 1",
            ));
        }
        if self.login_timeout <= self.auth_penalty_max {
            return Err(ConfigError::new(
                "server.login_timeout",
                "must be longer than server.auth_penalty_max, or a penalised login could never finish",
            ));
        }
        if self.max_login_commands == 0 {
            return Err(ConfigError::new(
                "server.max_login_commands",
                "must be at least 1",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| ConfigError::new("server.log_level", e.to_string()))?;
        self.password_hashing.validate()?;
        Ok(())
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        let s = popgate_server::SessionConfig::default();
        let l = popgate_server::limits::LimitsConfig::default();
        ServerSection {
            hostname: "localhost".into(),
            shutdown_grace: Duration::from_secs(30),
            config_check_interval: Duration::from_secs(10),
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

impl LimitsSection {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=32).contains(&self.ipv4_prefix) {
            return Err(ConfigError::new("limits.ipv4_prefix", "must be 1 to 32"));
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(ConfigError::new("limits.ipv6_prefix", "must be 1 to 128"));
        }
        if self.known_good_for < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "limits.known_good_for",
                "must be at least 1s",
            ));
        }
        Ok(())
    }
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
