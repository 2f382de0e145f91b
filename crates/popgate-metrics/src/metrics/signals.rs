//! Operator signals: the configured caps as gauges, so alerts compare load
//! with the cap the process really has (not a number copied into a rule),
//! and each certificate's expiry.

use std::sync::{Arc, OnceLock};

use popgate_server::tls::TlsProvider;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use super::{NO_TENANT, clamp, gauge};

pub(super) struct Signals {
    connections_max: IntGauge,
    connections_per_ip_max: IntGauge,
    tenant_sessions_max: IntGaugeVec,
    certificate_expiry: IntGaugeVec,
    /// The server's certificates, read at each scrape (they reload).
    tls: OnceLock<Arc<TlsProvider>>,
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Signals {
    pub(super) fn new(r: &Registry) -> Signals {
        Signals {
            connections_max: gauge(
                r,
                "popgate_connections_max",
                "Connections this process serves at once (server.max_connections); \
                 one more gets [SYS/TEMP].",
            ),
            connections_per_ip_max: gauge(
                r,
                "popgate_connections_per_ip_max",
                "Connections this process serves at once from one client address or prefix \
                 (server.max_connections_per_ip).",
            ),
            tenant_sessions_max: gauge_vec(
                r,
                "popgate_tenant_sessions_max",
                "Sessions of the tenant this process serves at once (tenants[].max_sessions); \
                 no series for a tenant without a cap.",
                &["tenant"],
            ),
            certificate_expiry: gauge_vec(
                r,
                "popgate_tls_certificate_expiry_timestamp_seconds",
                "When each certificate in use expires (its notAfter), in seconds since the \
                 Unix epoch; by tenant (\"-\" for [tls]) and the subject's CN. Follows reloads.",
                &["tenant", "subject_cn"],
            ),
            tls: OnceLock::new(),
        }
    }

    pub(super) fn set_connection_caps(&self, max: usize, per_ip: usize) {
        self.connections_max.set(clamp(max));
        self.connections_per_ip_max.set(clamp(per_ip));
    }

    pub(super) fn set_tenant_session_cap(&self, tenant: &str, cap: u32) {
        self.tenant_sessions_max
            .with_label_values(&[tenant])
            .set(i64::from(cap));
    }

    pub(super) fn watch_tls(&self, tls: Arc<TlsProvider>) {
        let _ = self.tls.set(tls);
        self.refresh();
    }

    /// Reads the certificates in use now (at each scrape): a reloaded
    /// certificate replaces its series, a removed one leaves none.
    pub(super) fn refresh(&self) {
        let Some(tls) = self.tls.get() else {
            return;
        };
        self.certificate_expiry.reset();
        for c in tls.certificates() {
            let tenant = c.tenant.as_deref().unwrap_or(NO_TENANT);
            self.certificate_expiry
                .with_label_values(&[tenant, &c.common_name])
                .set(c.not_after);
        }
    }
}
