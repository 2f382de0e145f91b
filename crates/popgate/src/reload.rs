//! Live reconfiguration: SIGHUP, or a changed configuration file (a
//! Kubernetes ConfigMap update), reloads the whole configuration without a
//! restart.
//!
//! - The new configuration is loaded and validated like at start; tenants,
//!   their directories and stores, the session settings and the
//!   certificates are built from it. Any error refuses the whole reload,
//!   with the key named in the log and `popgate_config_reloads_total
//!   {result="error"}`; the running configuration stays.
//! - New connections get the new configuration; a session keeps the one it
//!   started with (tenant, directory, store) until it ends.
//! - The abuse limits (`[limits]`, the connection caps, the login penalty,
//!   `login_timeout`, `max_login_commands`) apply at once to new
//!   connections and login attempts ([`Limits::reconfigure`]); what is
//!   counted stays (a lowered cap turns new connections away until enough
//!   open ones have ended, it ends none). `popgate_connections_max` follows.
//! - What a running process cannot change (listener addresses and their
//!   settings, `[metrics]`, `[locks]` and the password-hashing pool) is
//!   logged as needing a restart; the rest of the reload goes ahead.
//! - SIGHUP never ends the process, with or without TLS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use popgate_auth::HashPool;
use popgate_lock::MailboxLocks;
use popgate_lock::limits::Limits;
use popgate_metrics::{BackendMonitor, Metrics};
use popgate_server::tls::TlsProvider;
use popgate_server::{Shared, SharedHandle};

use crate::config::{Config, ConfigError};
use crate::wiring;

/// What a reload keeps from the start and what it replaces.
pub(crate) struct Reloader {
    pub file: Option<PathBuf>,
    pub running: Config,
    pub handle: SharedHandle,
    pub hashing: Arc<HashPool>,
    pub locks: Arc<dyn MailboxLocks>,
    pub limits: Arc<dyn Limits>,
    pub tls: Option<Arc<TlsProvider>>,
    pub metrics: Arc<Metrics>,
    pub backends: Option<Arc<BackendMonitor>>,
}

/// The configuration file's bytes, to notice a change (`None`: no file, or
/// unreadable now).
fn file_text(file: &Option<PathBuf>) -> Option<Vec<u8>> {
    std::fs::read(file.as_ref()?).ok()
}

impl Reloader {
    /// Reloads on SIGHUP and when the configuration file changes; reloads
    /// the certificates when only their files changed.
    pub(crate) async fn run(mut self) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGHUP");
                None
            }
        };
        let interval = self.running.server.config_check_interval;
        let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = file_text(&self.file);
        loop {
            let sighup = tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                _ = tick.tick() => false,
            };
            let now = file_text(&self.file);
            let file_changed = now.is_some() && now != seen;
            if sighup || file_changed {
                seen = now;
                self.reload(if sighup {
                    "SIGHUP"
                } else {
                    "config file change"
                })
                .await;
            } else if let Some(tls) = self.tls.as_ref().filter(|t| t.files_changed()) {
                match tls.reload() {
                    Ok(()) => tracing::info!(reason = "file change", "TLS certificates reloaded"),
                    Err(e) => tracing::error!(
                        reason = "file change",
                        error = %e,
                        "TLS certificate reload failed; keeping the old ones"
                    ),
                }
            }
        }
    }

    async fn reload(&mut self, reason: &'static str) {
        match self.try_reload(reason).await {
            Ok(config) => {
                self.metrics.config_reloaded(true);
                tracing::info!(
                    reason,
                    tenants = config.tenants.len(),
                    "configuration reloaded: new connections use it, sessions keep theirs"
                );
                self.running = config;
            }
            Err(e) => {
                self.metrics.config_reloaded(false);
                tracing::error!(
                    reason,
                    key = %e.key,
                    error = %e.message,
                    "configuration reload refused; the running configuration stays"
                );
            }
        }
    }

    async fn try_reload(&mut self, reason: &'static str) -> Result<Config, ConfigError> {
        let config = wiring::load_checked(self.file.as_deref(), false)?;
        let tenants = wiring::build_tenants(&config, &self.hashing)?;
        #[cfg(feature = "postgres")]
        crate::pg::check_schemas(&config)
            .await
            .map_err(|e| match e {
                wiring::Error::Config(c) => c,
                wiring::Error::Runtime(r) => ConfigError::new("tenants", r),
            })?;
        // Certificates: the same provider serves the new files, so
        // connections established keep theirs and new ones get the new.
        let tls = match (config.tls_settings(), &self.tls) {
            (Some(settings), Some(tls)) => {
                tls.reload_with(settings)
                    .map_err(|e| ConfigError::new("tls", e))?;
                tracing::info!(reason, "TLS certificates reloaded");
                Some(tls.clone())
            }
            (Some(settings), None) => {
                let tls =
                    Arc::new(TlsProvider::load(settings).map_err(|e| ConfigError::new("tls", e))?);
                self.metrics.watch_tls(tls.clone());
                Some(tls)
            }
            (None, _) => None,
        };
        for part in restart_needed(&self.running, &config) {
            tracing::warn!(
                key = part,
                "changed in the configuration, but takes effect only after a restart"
            );
        }
        // Nothing fails from here on: the whole reload applies.
        let limits = wiring::limits_config(&config);
        if limits.max_connections > self.limits.config().max_connections {
            crate::rlimit::raise_for(limits.max_connections);
        }
        self.metrics
            .set_connection_caps(limits.max_connections, limits.max_connections_per_ip);
        self.limits.reconfigure(limits);
        self.metrics
            .add_tenants(config.tenants.iter().map(|t| t.name.clone()));
        for t in &config.tenants {
            if let Some(cap) = t.max_sessions {
                self.metrics.set_tenant_session_cap(&t.name, cap);
            }
        }
        self.handle.replace(Shared {
            config: wiring::session_config(&config),
            tenants,
            locks: self.locks.clone(),
            observer: self.metrics.clone(),
            limits: self.limits.clone(),
            tls: tls.clone(),
            sessions: self.handle.current().sessions.clone(),
        });
        if let Some(b) = &self.backends {
            b.retarget(&self.handle.current());
        }
        self.tls = tls;
        Ok(config)
    }
}

/// The parts of the configuration a running process keeps until restart
/// that differ between `old` and `new`.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let (o, n) = (&old.server, &new.server);
    let mut out = Vec::new();
    for (key, unchanged) in [
        ("listeners", same(&old.listeners, &new.listeners)),
        ("metrics", same(&old.metrics, &new.metrics)),
        ("locks", same(&old.locks, &new.locks)),
        (
            "server.password_hashing",
            same(&o.password_hashing, &n.password_hashing),
        ),
        (
            "server.log_format",
            same(&o.log_format, &n.log_format) && o.log_level == n.log_level,
        ),
        (
            "server.shutdown_grace",
            o.shutdown_grace == n.shutdown_grace,
        ),
        (
            "server.config_check_interval",
            o.config_check_interval == n.config_check_interval,
        ),
    ] {
        if !unchanged {
            out.push(key);
        }
    }
    out
}
