//! The POP3 front end: listeners, the per-connection session, limits and
//! shutdown. It knows the seams (`MailStore`, `MailboxLocks`, `Directory`)
//! and no concrete backend.

use std::sync::Arc;
use std::time::Duration;

use popgate_lock::MailboxLocks;

mod conn;
pub mod directed;
#[doc(hidden)]
pub mod fuzzing;
pub use popgate_lock::limits;
mod listener;
pub mod logsafe;
pub mod observer;
pub mod proxy;
mod session;
pub mod sessions;
pub mod tenant;
pub mod tls;

pub use directed::Misdirected;
pub use listener::{Listener, Server, SharedHandle};
pub use observer::{SessionId, SessionObserver, SessionSummary};
pub use sessions::{SessionFilter, SessionInfo, SessionRegistry};
pub use tenant::{Tenant, Tenants};

use limits::Limits;
use proxy::Cidr;
use tls::TlsProvider;

/// How a listener treats TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    None,
    StartTls,
    Implicit,
}

/// One listening socket's behaviour.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub tls: TlsMode,
    /// Allow USER/PASS, APOP and SASL PLAIN/LOGIN before TLS.
    pub plaintext_auth: bool,
    /// The tenant of logins without `@domain`.
    pub default_tenant: Option<String>,
    /// Expect a PROXY v1/v2 header from one of `trusted_proxies`.
    pub proxy_protocol: bool,
    pub trusted_proxies: Vec<Cidr>,
}

/// Session rules shared by all listeners.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Shown in the greeting and the APOP timestamp.
    pub hostname: String,
    /// Idle time allowed before login.
    pub auth_timeout: Duration,
    /// Idle time allowed after login (RFC 1939: at least 10 minutes).
    pub idle_timeout: Duration,
    /// How long one write to a client may block on a client that does not read.
    pub send_timeout: Duration,
    /// How long a started command line may take to complete (slow senders),
    /// and how long a TLS handshake or PROXY header may take.
    pub command_timeout: Duration,
    /// Failed logins after which the connection is closed.
    pub max_auth_failures: u32,
    /// Malformed or out-of-state commands after which the connection is closed.
    pub max_bad_commands: u32,
    /// Pause before answering a failed login.
    pub auth_failure_delay: Duration,
    /// `IMPLEMENTATION` in CAPA; `None` hides it.
    pub implementation: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            hostname: "localhost".into(),
            auth_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            send_timeout: Duration::from_secs(60),
            command_timeout: Duration::from_secs(30),
            max_auth_failures: 3,
            max_bad_commands: 20,
            auth_failure_delay: Duration::from_secs(2),
            implementation: Some(concat!("popgate ", env!("CARGO_PKG_VERSION")).into()),
        }
    }
}

/// What every session needs, shared.
pub struct Shared {
    pub config: SessionConfig,
    pub tenants: Tenants,
    pub locks: Arc<dyn MailboxLocks>,
    pub observer: Arc<dyn SessionObserver>,
    pub limits: Arc<dyn Limits>,
    /// Certificates for `starttls` and `implicit` listeners.
    pub tls: Option<Arc<TlsProvider>>,
    /// The live sessions of the process: one registry for its whole life,
    /// kept by every reload.
    pub sessions: Arc<SessionRegistry>,
}
