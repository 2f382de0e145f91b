//! The configuration model: one TOML file plus `POPGATE_` environment
//! overrides (`__` between levels), loaded with figment, then validated
//! before anything listens. Every error names the key it is about.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

mod duration;
mod http_auth;
mod ldap;
mod listeners;
mod locks;
mod metrics;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "s3")]
mod s3;
mod secrets;
mod server;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod sql;
mod tenants;
#[cfg(test)]
mod tests;

pub use http_auth::HttpAuthSection;
pub use ldap::LdapSection;
pub use listeners::{ListenerSection, TlsSetting};
pub use locks::{LockBackend, LocksSection};
pub use metrics::MetricsSection;
#[cfg(feature = "postgres")]
pub use postgres::PgSection;
#[cfg(feature = "s3")]
pub use s3::S3Section;
/// Without the feature, a `kind = "postgres"` table is read (and refused).
#[cfg(not(feature = "postgres"))]
pub type PgSection = Unbuilt;
/// Without the feature, a `kind = "s3"` table is read (and refused).
#[cfg(not(feature = "s3"))]
pub type S3Section = Unbuilt;
pub use server::{LimitsSection, LogFormat, ServerSection};
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub use sql::SqlSection;
/// Without a driver, a `kind = "sql"` table is read (and refused).
#[cfg(not(any(feature = "mysql", feature = "postgres")))]
pub type SqlSection = Unbuilt;
pub use tenants::{AuthSection, ExpireSetting, StoreSection, TenantSection};

/// The embedded default: everything local, no other service needed.
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

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
        let by_tenant: Vec<_> = self
            .tenants
            .iter()
            .filter_map(|t| {
                t.tls.as_ref().map(|c| popgate_server::tls::TenantCert {
                    tenant: t.name.clone(),
                    domains: t.domains.clone(),
                    files: c.files(),
                })
            })
            .collect();
        (default.is_some() || !by_tenant.is_empty())
            .then_some(popgate_server::tls::TlsSettings { default, by_tenant })
    }
}

/// The settings of a backend this build lacks: read whatever they say, so
/// that validation refuses the `kind` by name instead of serde's "unknown
/// variant".
#[cfg(not(all(feature = "postgres", feature = "s3")))]
#[derive(Debug)]
pub struct Unbuilt;

#[cfg(not(all(feature = "postgres", feature = "s3")))]
impl<'de> Deserialize<'de> for Unbuilt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Unbuilt)
    }
}

/// `tenants[0].store: kind "s3" is not in this build (built without the "s3" feature)`.
#[cfg(not(all(
    feature = "maildir",
    feature = "postgres",
    feature = "redis",
    feature = "s3",
    feature = "ldap",
    feature = "http-auth"
)))]
pub fn unbuilt(key: impl Into<String>, what: &str, feature: &str) -> ConfigError {
    ConfigError::new(
        key,
        format!("{what} is not in this build (built without the \"{feature}\" feature)"),
    )
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
    secrets::read_all(&mut config)?;
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
        self.server.validate()?;
        self.limits.validate()?;
        let hashing = popgate_auth::HashPool::new(self.server.password_hashing.pool_config());
        let bound = listeners::validate(self)?;
        self.locks.validate()?;
        if let Some(m) = &self.metrics {
            m.validate(&bound)?;
        }
        if let Some(t) = &self.tls {
            popgate_server::tls::check_pair(&t.files()).map_err(|e| ConfigError::new("tls", e))?;
        }
        tenants::validate(self, &hashing)
    }
}
