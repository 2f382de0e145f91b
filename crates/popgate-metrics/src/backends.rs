//! Backend health, apart from readiness: every tenant's store and
//! directory, and the lock service, are pinged in the background. The result
//! goes to `popgate_backend_up{tenant,backend,kind}` and to the `/backends`
//! page, never to `/readyz`: one tenant's dead database must not take every
//! replica out of its Service, and with it every other tenant.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use popgate_server::Shared;

use crate::Metrics;

type Ping = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// One backend to watch.
struct Check {
    tenant: Option<String>,
    backend: &'static str,
    kind: &'static str,
    ping: Ping,
}

/// What the last check of a backend found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    /// The tenant, or `None` for a shared backend (the lock service).
    pub tenant: Option<String>,
    /// `store`, `directory` or `locks`.
    pub backend: &'static str,
    /// The implementation: `maildir`, `postgres`, `redis`, ...
    pub kind: &'static str,
    /// `None` before the first check.
    pub up: Option<bool>,
    /// The last failure's message (this page is behind the metrics token).
    pub error: Option<String>,
    pub latency: Duration,
    /// Unix seconds of the last change of `up`.
    pub since: u64,
}

/// Pings every backend every `interval`, each within `timeout`.
pub struct BackendMonitor {
    checks: Mutex<Arc<Vec<Check>>>,
    status: Mutex<Vec<BackendStatus>>,
    interval: Duration,
    timeout: Duration,
}

impl BackendMonitor {
    /// The backends of a server: the lock service and each tenant's
    /// directory and store.
    pub fn of(shared: &Shared) -> Self {
        let checks = checks_of(shared);
        let status = checks.iter().map(Check::unknown).collect();
        BackendMonitor {
            checks: Mutex::new(Arc::new(checks)),
            status: Mutex::new(status),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
        }
    }

    /// Checks the backends of a reloaded configuration from now on; a
    /// backend that was there before keeps its status.
    pub fn retarget(&self, shared: &Shared) {
        let checks = checks_of(shared);
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::take(&mut *status);
        *status = checks
            .iter()
            .map(|c| {
                old.iter()
                    .find(|s| s.tenant == c.tenant && s.backend == c.backend && s.kind == c.kind)
                    .cloned()
                    .unwrap_or_else(|| c.unknown())
            })
            .collect();
        *self.checks.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(checks);
    }

    /// How often to check (default 10 s) and how long one ping may take
    /// before it counts as down (default 2 s).
    pub fn timing(mut self, interval: Duration, timeout: Duration) -> Self {
        self.interval = interval;
        self.timeout = timeout;
        self
    }

    /// The last result of every check.
    pub fn status(&self) -> Vec<BackendStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks every backend at once, records the results, and returns them.
    pub async fn check_all(&self, metrics: &Metrics) -> Vec<BackendStatus> {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut set = tokio::task::JoinSet::new();
        for (i, c) in checks.iter().enumerate() {
            let ping = c.ping.clone();
            let timeout = self.timeout;
            set.spawn(async move {
                let started = Instant::now();
                let result = match tokio::time::timeout(timeout, ping()).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                (i, result, started.elapsed())
            });
        }
        let mut results = Vec::with_capacity(checks.len());
        while let Some(joined) = set.join_next().await {
            if let Ok(r) = joined {
                results.push(r);
            }
        }
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(
            &checks,
            &self.checks.lock().unwrap_or_else(|p| p.into_inner()),
        ) {
            // Retargeted meanwhile: these results are of the old backends.
            return status.clone();
        }
        for (i, result, latency) in results {
            let c = &checks[i];
            let s = &mut status[i];
            let up = result.is_ok();
            if s.up != Some(up) {
                s.since = unix_now();
                match &result {
                    Ok(()) if s.up.is_some() => {
                        tracing::info!(
                            tenant = c.tenant.as_deref().unwrap_or("-"),
                            backend = c.backend,
                            kind = c.kind,
                            "backend is up again"
                        )
                    }
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(tenant = c.tenant.as_deref().unwrap_or("-"), backend = c.backend, kind = c.kind, error = %e, "backend is down")
                    }
                }
            }
            s.up = Some(up);
            s.error = result.err();
            s.latency = latency;
            metrics.backend_up(c.tenant.as_deref(), c.backend, c.kind, up);
        }
        status.clone()
    }

    /// Checks forever, every interval; spawn it.
    pub async fn run(self: Arc<Self>, metrics: Arc<Metrics>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check_all(&metrics).await;
        }
    }

    /// The `/backends` page: one line a backend.
    pub fn render(&self) -> String {
        let mut out = String::from("# tenant backend kind state since_unix latency_ms error\n");
        for s in self.status() {
            let state = match s.up {
                Some(true) => "up",
                Some(false) => "down",
                None => "unchecked",
            };
            let _ = writeln!(
                out,
                "{} {} {} {state} {} {} {}",
                s.tenant.as_deref().unwrap_or("-"),
                s.backend,
                s.kind,
                s.since,
                s.latency.as_millis(),
                s.error.as_deref().unwrap_or("-").replace('\n', " ")
            );
        }
        out
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The backends of a server: the lock service and each tenant's directory
/// and store.
fn checks_of(shared: &Shared) -> Vec<Check> {
    let mut checks = Vec::new();
    let locks = shared.locks.clone();
    checks.push(Check {
        tenant: None,
        backend: "locks",
        kind: locks.backend(),
        ping: Arc::new(move || {
            let locks = locks.clone();
            Box::pin(async move { locks.ping().await.map_err(|e| e.to_string()) })
        }),
    });
    let mut tenants: Vec<_> = shared.tenants.iter().cloned().collect();
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tenants {
        let dir = t.directory.clone();
        checks.push(Check {
            tenant: Some(t.name.clone()),
            backend: "directory",
            kind: dir.kind(),
            ping: Arc::new(move || {
                let dir = dir.clone();
                Box::pin(async move { dir.ping().await.map_err(|e| e.to_string()) })
            }),
        });
        let store = t.store.clone();
        checks.push(Check {
            tenant: Some(t.name.clone()),
            backend: "store",
            kind: store.backend(),
            ping: Arc::new(move || {
                let store = store.clone();
                Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
            }),
        });
    }
    checks
}

impl Check {
    fn unknown(&self) -> BackendStatus {
        BackendStatus {
            tenant: self.tenant.clone(),
            backend: self.backend,
            kind: self.kind,
            up: None,
            error: None,
            latency: Duration::ZERO,
            since: unix_now(),
        }
    }
}
