//! `[metrics]`: the Prometheus exporter and the backend probes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::duration::duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub address: String,
    /// When set, /metrics wants `Authorization: Bearer <token>`; /healthz
    /// and /readyz stay open. Absent: /metrics is open.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// `bearer_token` read from this file (a mounted secret): one of the two.
    #[serde(default)]
    pub bearer_token_file: Option<std::path::PathBuf>,
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

impl MetricsSection {
    /// `bound`: the listeners' addresses, which the exporter cannot share.
    pub(super) fn validate(&self, bound: &HashMap<SocketAddr, usize>) -> Result<(), ConfigError> {
        let addr = self
            .address
            .parse::<SocketAddr>()
            .map_err(|e| ConfigError::new("metrics.address", format!("{:?}: {e}", self.address)))?;
        if self.backend_check_interval.is_zero() || self.backend_check_timeout.is_zero() {
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
        if let Some(t) = &self.bearer_token
            && (t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::new(
                "metrics.bearer_token",
                "must be printable ASCII without spaces",
            ));
        }
        Ok(())
    }
}
