//! Every metric family popgate exports, and the observer that moves them.
//!
//! Label values are bounded by construction: commands, results, mechanisms,
//! reasons, backends, operations and kinds are `&'static str` from the code,
//! and a tenant label is either a configured tenant's name or [`NO_TENANT`].
//! No user name, mailbox or address ever becomes a label.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use popgate_auth::HashPool;
use popgate_server::SessionObserver;
use popgate_server::observer::{Outcome, SessionSummary};
use popgate_server::tls::TlsProvider;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The tenant label of a session that has no (configured) tenant: before
/// login, or a login naming a domain no tenant serves.
pub const NO_TENANT: &str = "-";

/// The store operations a session makes, for series present from the start.
const STORE_OPS: [&str; 3] = ["open", "fetch", "expunge"];

const SESSION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
const STORE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const PENALTY_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

/// The registry and every metric family. Share it as `Arc<Metrics>`: it is
/// the server's observer and the exporter's source at once.
pub struct Metrics {
    registry: Registry,
    /// The configured tenants (grows when a reload adds some).
    tenants: std::sync::RwLock<HashSet<String>>,
    connections_accepted: IntCounter,
    config_reloads: IntCounterVec,
    config_last_reload: IntGauge,
    connections_rejected: IntCounterVec,
    sessions_active: IntGauge,
    sessions: IntCounterVec,
    session_duration: HistogramVec,
    commands: IntCounterVec,
    logins: IntCounterVec,
    sent_bytes: IntCounterVec,
    messages_retrieved: IntCounterVec,
    messages_deleted: IntCounterVec,
    lock_acquisitions: IntCounterVec,
    locks_lost: IntCounterVec,
    store_duration: HistogramVec,
    store_errors: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_handshake_failures: IntCounterVec,
    proxy_header_errors: IntCounterVec,
    login_penalty: Histogram,
    backend_up: IntGaugeVec,
    ready: IntGauge,
    tenant_sessions: IntGaugeVec,
    tenant_store_errors: IntCounterVec,
    hashing_slots: IntGauge,
    hashing_busy: IntGauge,
    hashing_waiting: IntGauge,
    /// The server's hashing pool, read at each scrape.
    hashing: OnceLock<Arc<HashPool>>,
    signals: signals::Signals,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

impl Metrics {
    /// `version` goes into `popgate_build_info`; `tenants` are the configured
    /// tenant names, the only values the `tenant` label may take besides
    /// [`NO_TENANT`].
    pub fn new<I, S>(version: &str, tenants: I) -> Metrics
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let r = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "popgate_build_info",
                "Always 1; the labels tell which popgate build runs.",
            ),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build_info.clone()))
            .expect("metric registered once");
        build_info.with_label_values(&[version]).set(1);

        let sessions_active = IntGauge::new("popgate_sessions_active", "POP3 sessions open now.")
            .expect("valid metric");
        r.register(Box::new(sessions_active.clone()))
            .expect("metric registered once");
        let login_penalty = Histogram::with_opts(
            HistogramOpts::new(
                "popgate_login_penalty_delay_seconds",
                "Delays imposed on logins by brute-force throttling.",
            )
            .buckets(PENALTY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(login_penalty.clone()))
            .expect("metric registered once");

        let m = Metrics {
            tenants: std::sync::RwLock::new(HashSet::new()),
            config_reloads: counter_vec(
                &r,
                "popgate_config_reloads_total",
                "Configuration reloads (SIGHUP or a changed file), by result: ok, or error (the running configuration stays).",
                &["result"],
            ),
            config_last_reload: gauge(
                &r,
                "popgate_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load (the start counts).",
            ),
            connections_accepted: counter(
                &r,
                "popgate_connections_accepted_total",
                "TCP connections accepted, including those then rejected or failing TLS.",
            ),
            connections_rejected: counter_vec(
                &r,
                "popgate_connections_rejected_total",
                "TCP connections refused before a session started, by reason.",
                &["reason"],
            ),
            sessions_active,
            sessions: counter_vec(
                &r,
                "popgate_sessions_total",
                "POP3 sessions ended, by outcome.",
                &["outcome"],
            ),
            session_duration: histogram_vec(
                &r,
                "popgate_session_duration_seconds",
                "How long POP3 sessions lasted, by outcome.",
                SESSION_BUCKETS,
                &["outcome"],
            ),
            commands: counter_vec(
                &r,
                "popgate_commands_total",
                "POP3 commands answered, by command and result (ok: +OK, err: -ERR).",
                &["command", "result"],
            ),
            logins: counter_vec(
                &r,
                "popgate_logins_total",
                "Login attempts by tenant, mechanism and result.",
                &["tenant", "mechanism", "result"],
            ),
            sent_bytes: counter_vec(
                &r,
                "popgate_sent_bytes_total",
                "Bytes sent to POP3 clients, counted as each write completes; the bytes before \
                 the credentials name a tenant are added to it then (or to \"-\" at the end).",
                &["tenant"],
            ),
            messages_retrieved: counter_vec(
                &r,
                "popgate_messages_retrieved_total",
                "Messages sent whole by RETR.",
                &["tenant"],
            ),
            messages_deleted: counter_vec(
                &r,
                "popgate_messages_deleted_total",
                "Messages removed from the store by a committed QUIT.",
                &["tenant"],
            ),
            lock_acquisitions: counter_vec(
                &r,
                "popgate_lock_acquisitions_total",
                "Mailbox lock attempts by tenant and result (ok, in_use, error).",
                &["tenant", "result"],
            ),
            locks_lost: counter_vec(
                &r,
                "popgate_locks_lost_total",
                "Mailbox locks lost while a session held them.",
                &["tenant"],
            ),
            store_duration: histogram_vec(
                &r,
                "popgate_store_operation_duration_seconds",
                "Mail store operation latency by backend and operation (fetch includes streaming to the client).",
                STORE_BUCKETS,
                &["backend", "op"],
            ),
            store_errors: counter_vec(
                &r,
                "popgate_store_errors_total",
                "Failed mail store operations by backend, operation and error kind.",
                &["backend", "op", "kind"],
            ),
            tls_handshakes: counter_vec(
                &r,
                "popgate_tls_handshakes_total",
                "TLS handshakes completed, by kind (starttls, implicit; proxy: TLS terminated by a trusted balancer, PROXY v2 PP2_TYPE_SSL).",
                &["kind"],
            ),
            tls_handshake_failures: counter_vec(
                &r,
                "popgate_tls_handshake_failures_total",
                "TLS handshakes that failed, by kind and reason.",
                &["kind", "reason"],
            ),
            proxy_header_errors: counter_vec(
                &r,
                "popgate_proxy_header_errors_total",
                "Connections dropped for a bad, missing or untrusted PROXY header, by reason.",
                &["reason"],
            ),
            login_penalty,
            ready: gauge(
                &r,
                "popgate_ready",
                "1 when this process is ready for traffic (/readyz answers 200), 0 when not \
                 (starting, draining); read at each scrape.",
            ),
            tenant_sessions: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "popgate_tenant_sessions_active",
                        "POP3 sessions open now, by tenant: a session counts under \"-\" until \
                         its login completes. The sum is popgate_sessions_active.",
                    ),
                    &["tenant"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            tenant_store_errors: counter_vec(
                &r,
                "popgate_tenant_store_errors_total",
                "Failed mail store operations of logged-in sessions, by tenant and operation \
                 (popgate_store_errors_total has the backend and the error kind).",
                &["tenant", "op"],
            ),
            hashing_slots: gauge(
                &r,
                "popgate_password_hashing_slots",
                "Password checks that may run at once (server.password_hashing.slots).",
            ),
            hashing_busy: gauge(
                &r,
                "popgate_password_hashing_slots_busy",
                "Password-hashing slots in use at the scrape.",
            ),
            hashing_waiting: gauge(
                &r,
                "popgate_password_hashing_waiting",
                "Logins waiting for a password-hashing slot (or for their tenant's share) \
                 at the scrape.",
            ),
            hashing: OnceLock::new(),
            signals: signals::Signals::new(&r),
            backend_up: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "popgate_backend_up",
                        "1 when the backend answered its last health check, 0 when it failed or timed out; \
                         by tenant (\"-\" for the lock service), backend (store, directory, locks) and kind.",
                    ),
                    &["tenant", "backend", "kind"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            registry: r,
        };
        // Series that should exist from the start, so rates and alerts see a
        // zero rather than nothing.
        for outcome in Outcome::ALL {
            m.sessions.with_label_values(&[outcome.as_str()]);
        }
        m.tenant_sessions.with_label_values(&[NO_TENANT]);
        for result in ["ok", "error"] {
            m.config_reloads.with_label_values(&[result]);
        }
        m.config_last_reload.set(unix_now_secs());
        m.sent_bytes.with_label_values(&[NO_TENANT]);
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(crate::process::ProcessCollector::new()))
            .expect("metric registered once");
        m.add_tenants(tenants);
        m
    }

    /// Tenants that a reloaded configuration added: their series from now on.
    pub fn add_tenants<I, S>(&self, tenants: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut known = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        for tenant in tenants {
            let tenant: String = tenant.into();
            if !known.insert(tenant.clone()) {
                continue;
            }
            let m = self;
            let t = tenant.as_str();
            m.tenant_sessions.with_label_values(&[t]);
            for op in STORE_OPS {
                m.tenant_store_errors.with_label_values(&[t, op]);
            }
            m.sent_bytes.with_label_values(&[t]);
            m.messages_retrieved.with_label_values(&[t]);
            m.messages_deleted.with_label_values(&[t]);
            m.locks_lost.with_label_values(&[t]);
            for result in ["ok", "in_use", "error"] {
                m.lock_acquisitions.with_label_values(&[t, result]);
            }
        }
    }

    /// Counts a configuration reload; a successful one also sets
    /// `popgate_config_last_reload_success_timestamp_seconds`.
    pub fn config_reloaded(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        if ok {
            self.config_last_reload.set(unix_now_secs());
        }
    }

    /// Sets `popgate_ready` (the exporter does, at each scrape, from its
    /// readiness check).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Reads the hashing pool's slots and queue at each scrape. The first
    /// pool given is kept.
    pub fn watch_hashing(&self, pool: Arc<HashPool>) {
        self.hashing_slots.set(clamp(pool.config().slots));
        let _ = self.hashing.set(pool);
    }

    /// Sets `popgate_connections_max` and `popgate_connections_per_ip_max`.
    pub fn set_connection_caps(&self, max: usize, per_ip: usize) {
        self.signals.set_connection_caps(max, per_ip);
    }

    /// Sets `popgate_tenant_sessions_max` of a configured tenant with a cap.
    pub fn set_tenant_session_cap(&self, tenant: &str, cap: u32) {
        if self.known(tenant) {
            self.signals.set_tenant_session_cap(tenant, cap);
        }
    }

    /// Shows the expiry of the certificates `tls` serves, read at each
    /// scrape. The first provider given is kept.
    pub fn watch_tls(&self, tls: Arc<TlsProvider>) {
        self.signals.watch_tls(tls);
    }

    /// Records a backend health check (see `BackendMonitor`).
    pub fn backend_up(
        &self,
        tenant: Option<&str>,
        backend: &'static str,
        kind: &'static str,
        up: bool,
    ) {
        self.backend_up
            .with_label_values(&[self.tenant(tenant), backend, kind])
            .set(i64::from(up));
    }

    /// The registry, to register more collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        if let Some(pool) = self.hashing.get() {
            self.hashing_busy.set(clamp(pool.busy()));
            self.hashing_waiting.set(clamp(pool.waiting()));
        }
        self.signals.refresh();
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding our own well-formed families into a Vec cannot fail.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// A tenant label value: a configured tenant's name, or [`NO_TENANT`].
    fn tenant<'a>(&self, tenant: Option<&'a str>) -> &'a str {
        match tenant {
            Some(t) if self.known(t) => t,
            _ => NO_TENANT,
        }
    }

    fn known(&self, tenant: &str) -> bool {
        self.tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(tenant)
    }
}

fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SessionObserver for Metrics {
    fn connection_accepted(&self) {
        self.connections_accepted.inc();
    }

    fn connection_rejected(&self, reason: &'static str) {
        self.connections_rejected.with_label_values(&[reason]).inc();
    }

    fn command(&self, _tenant: Option<&str>, command: &'static str, ok: bool) {
        self.commands
            .with_label_values(&[command, if ok { "ok" } else { "err" }])
            .inc();
    }

    fn login(&self, tenant: Option<&str>, mechanism: &'static str, result: &'static str) {
        let tenant = self.tenant(tenant);
        self.logins
            .with_label_values(&[tenant, mechanism, result])
            .inc();
        // A completed login (once per session): the session moves from "-"
        // to its tenant.
        if result == "ok" {
            self.tenant_sessions.with_label_values(&[NO_TENANT]).dec();
            self.tenant_sessions.with_label_values(&[tenant]).inc();
        }
    }

    fn lock(&self, tenant: &str, result: &'static str) {
        self.lock_acquisitions
            .with_label_values(&[self.tenant(Some(tenant)), result])
            .inc();
    }

    fn lock_lost(&self, tenant: &str) {
        self.locks_lost
            .with_label_values(&[self.tenant(Some(tenant))])
            .inc();
    }

    fn store_operation(
        &self,
        backend: &'static str,
        op: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        self.store_duration
            .with_label_values(&[backend, op])
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error {
            self.store_errors
                .with_label_values(&[backend, op, kind])
                .inc();
        }
    }

    fn tenant_store_error(&self, tenant: &str, op: &'static str) {
        self.tenant_store_errors
            .with_label_values(&[self.tenant(Some(tenant)), op])
            .inc();
    }

    fn bytes_sent(&self, tenant: Option<&str>, bytes: u64) {
        self.sent_bytes
            .with_label_values(&[self.tenant(tenant)])
            .inc_by(bytes);
    }

    fn session_started(&self) {
        self.sessions_active.inc();
        self.tenant_sessions.with_label_values(&[NO_TENANT]).inc();
    }

    fn session_ended(&self, s: &SessionSummary) {
        self.sessions_active.dec();
        let counted_under = if s.logged_in {
            self.tenant(s.tenant.as_deref())
        } else {
            NO_TENANT
        };
        self.tenant_sessions
            .with_label_values(&[counted_under])
            .dec();
        let outcome = s.outcome.as_str();
        self.sessions.with_label_values(&[outcome]).inc();
        self.session_duration
            .with_label_values(&[outcome])
            .observe(s.duration.as_secs_f64());
        // Its bytes were counted as they were written (`bytes_sent`).
        let tenant = self.tenant(s.tenant.as_deref());
        if s.retrieved > 0 {
            self.messages_retrieved
                .with_label_values(&[tenant])
                .inc_by(s.retrieved);
        }
        if s.deleted > 0 {
            self.messages_deleted
                .with_label_values(&[tenant])
                .inc_by(s.deleted);
        }
    }

    fn tls_handshake(&self, mode: &'static str) {
        self.tls_handshakes.with_label_values(&[mode]).inc();
    }

    fn tls_handshake_failed(&self, mode: &'static str, reason: &'static str) {
        self.tls_handshake_failures
            .with_label_values(&[mode, reason])
            .inc();
    }

    fn proxy_header_error(&self, reason: &'static str) {
        self.proxy_header_errors.with_label_values(&[reason]).inc();
    }

    fn login_penalty(&self, delay: Duration) {
        self.login_penalty.observe(delay.as_secs_f64());
    }
}

mod signals;
#[cfg(test)]
mod tests;
