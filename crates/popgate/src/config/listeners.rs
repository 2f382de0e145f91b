//! `[[listeners]]`.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::{Config, ConfigError};

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

/// Checks every listener; returns the addresses bound, each with its
/// listener's index.
pub(super) fn validate(config: &Config) -> Result<HashMap<SocketAddr, usize>, ConfigError> {
    if config.listeners.is_empty() {
        return Err(ConfigError::new(
            "listeners",
            "at least one [[listeners]] entry is needed",
        ));
    }
    for (i, l) in config.listeners.iter().enumerate() {
        let key = |k: &str| format!("listeners[{i}].{k}");
        l.address
            .parse::<SocketAddr>()
            .map_err(|e| ConfigError::new(key("address"), format!("{:?}: {e}", l.address)))?;
        if l.tls != TlsSetting::None && config.tls.is_none() {
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
        // Behind a balancer that terminates TLS (PROXY v2 with PP2_TYPE_SSL)
        // such a listener serves the balancer's TLS clients.
        if l.tls == TlsSetting::None && !l.plaintext_auth && !l.proxy_protocol {
            return Err(ConfigError::new(
                key("plaintext_auth"),
                "false on a listener without TLS: nobody could log in (set plaintext_auth = true, use TLS, \
                 or proxy_protocol behind a balancer that terminates TLS)",
            ));
        }
        if let Some(t) = &l.default_tenant
            && !config.tenants.iter().any(|x| &x.name == t)
        {
            return Err(ConfigError::new(
                key("default_tenant"),
                format!("no tenant is named {t:?}"),
            ));
        }
    }
    let mut bound = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
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
    Ok(bound)
}
