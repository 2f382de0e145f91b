//! Observability: the Prometheus registry every session reports into
//! ([`Metrics`], a [`popgate_server::SessionObserver`]) and a small HTTP
//! exporter serving `/metrics`, `/healthz` and `/readyz` ([`Exporter`]).
//!
//! The exporter is a deliberately tiny HTTP/1.1 responder (GET only, one
//! request per connection, bounded request head, timeouts): Prometheus and
//! Kubernetes probes need nothing more, and it keeps the dependency tree lean.

pub mod admin;
mod backends;
mod http;
mod metrics;
#[cfg(target_os = "linux")]
mod process;
mod readiness;

pub use admin::{Admin, FleetSession, Listing};
pub use backends::{BackendMonitor, BackendStatus};
pub use http::{Exporter, MAX_REQUEST_HEAD};
pub use metrics::{Metrics, NO_TENANT};
pub use readiness::{Readiness, ServeState, ServerReadiness};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;
