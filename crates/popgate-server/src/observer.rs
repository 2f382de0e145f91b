//! Hooks for metrics: the session reports what happened, an observer counts.
//! The default methods do nothing, so an observer implements what it needs.

use std::net::SocketAddr;
use std::time::Duration;

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// QUIT, with the UPDATE state committed (or nothing to commit).
    Quit,
    /// QUIT in TRANSACTION whose expunge failed: nothing or not all deleted.
    UpdateFailed,
    /// The client went away without QUIT.
    Dropped,
    /// Idle or send timeout.
    Timeout,
    /// Too many failed logins or bad commands.
    Abuse,
    /// The mailbox lock was lost mid-session.
    LockLost,
    /// The server shut down.
    Shutdown,
    /// An I/O error on the connection.
    Error,
}

impl Outcome {
    /// Every outcome, for metrics that want each series present from the start.
    pub const ALL: [Outcome; 8] = [
        Outcome::Quit,
        Outcome::UpdateFailed,
        Outcome::Dropped,
        Outcome::Timeout,
        Outcome::Abuse,
        Outcome::LockLost,
        Outcome::Shutdown,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Quit => "quit",
            Outcome::UpdateFailed => "update_failed",
            Outcome::Dropped => "dropped",
            Outcome::Timeout => "timeout",
            Outcome::Abuse => "abuse",
            Outcome::LockLost => "lock_lost",
            Outcome::Shutdown => "shutdown",
            Outcome::Error => "error",
        }
    }
}

/// The one-line record of a finished session.
#[derive(Clone, Debug)]
pub struct SessionSummary {
    pub id: u64,
    pub client: SocketAddr,
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub commands: u64,
    pub bytes_sent: u64,
    pub retrieved: u64,
    pub deleted: u64,
    pub duration: Duration,
    pub outcome: Outcome,
}

pub trait SessionObserver: Send + Sync {
    fn connection_accepted(&self) {}
    fn connection_rejected(&self, _reason: &'static str) {}
    fn command(&self, _tenant: Option<&str>, _command: &'static str, _ok: bool) {}
    /// `result`: `ok`, `failed`, `in_use`, `temp_error`, `perm_error`, `denied`.
    fn login(&self, _tenant: Option<&str>, _mechanism: &'static str, _result: &'static str) {}
    /// `result`: `ok`, `in_use`, `error`.
    fn lock(&self, _tenant: &str, _result: &'static str) {}
    fn lock_lost(&self, _tenant: &str) {}
    fn store_operation(
        &self,
        _backend: &'static str,
        _op: &'static str,
        _elapsed: Duration,
        _error: Option<&'static str>,
    ) {
    }
    fn session_started(&self) {}
    fn session_ended(&self, _summary: &SessionSummary) {}
    /// A TLS handshake completed. `mode`: `starttls` or `implicit`.
    fn tls_handshake(&self, _mode: &'static str) {}
    /// A TLS handshake failed. `reason`: a bounded word (`timeout`, `eof`,
    /// `protocol`, `certificate`, ...), never a peer-supplied string.
    fn tls_handshake_failed(&self, _mode: &'static str, _reason: &'static str) {}
    /// A PROXY protocol header was missing, malformed, late or from an
    /// untrusted peer. `reason`: a bounded word (`malformed`, `timeout`, ...).
    fn proxy_header_error(&self, _reason: &'static str) {}
    /// Brute-force throttling held a login back (or its answer) for `delay`.
    fn login_penalty(&self, _delay: Duration) {}
}

/// Observes nothing.
pub struct NoObserver;
impl SessionObserver for NoObserver {}
