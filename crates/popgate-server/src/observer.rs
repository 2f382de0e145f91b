//! Hooks for metrics: the session reports what happened, an observer counts.
//! The default methods do nothing, so an observer implements what it needs.

use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A session's id, unique across replicas and restarts: a random 32-bit
/// prefix drawn once per process, and the process's session counter.
/// Shown as `8f3a1c2e-000017` (eight hex digits, a dash, at least six
/// decimal digits), so one session's lines can be picked out of the logs of
/// a whole fleet, and one process's sessions by the prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub process: u32,
    pub seq: u64,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl SessionId {
    /// The next id of this process.
    pub fn next() -> SessionId {
        SessionId {
            process: process_prefix(),
            seq: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:06}", self.process, self.seq)
    }
}

impl std::str::FromStr for SessionId {
    type Err = ();

    /// Reads back what `Display` writes.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (prefix, seq) = s.split_once('-').ok_or(())?;
        if prefix.len() != 8 || seq.is_empty() || !seq.bytes().all(|c| c.is_ascii_digit()) {
            return Err(());
        }
        Ok(SessionId {
            process: u32::from_str_radix(prefix, 16).map_err(drop)?,
            seq: seq.parse().map_err(drop)?,
        })
    }
}

/// This process's random prefix of session ids. Should the system's random
/// source fail, the pid and the clock stand in: unique enough for logs.
pub fn process_prefix() -> u32 {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        getrandom::u32().unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
                .unwrap_or(0);
            std::process::id().rotate_left(16) ^ nanos
        })
    })
}

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
    /// An administrator ended the session (`popgate kick`).
    Kicked,
    /// The server shut down.
    Shutdown,
    /// An I/O error on the connection.
    Error,
}

impl Outcome {
    /// Every outcome, for metrics that want each series present from the start.
    pub const ALL: [Outcome; 9] = [
        Outcome::Quit,
        Outcome::UpdateFailed,
        Outcome::Dropped,
        Outcome::Timeout,
        Outcome::Abuse,
        Outcome::LockLost,
        Outcome::Kicked,
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
            Outcome::Kicked => "kicked",
            Outcome::Shutdown => "shutdown",
            Outcome::Error => "error",
        }
    }
}

/// How a login attempt ended: the `result` label of the login metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginResult {
    /// The session is in TRANSACTION.
    Ok,
    /// The credentials were not good (or the name is no login).
    Failed,
    /// Good credentials, but another session holds the mailbox.
    InUse,
    /// Good credentials, refused by policy (LOGIN-DELAY, the tenant's cap).
    Denied,
    /// The directory, the lock or the store failed for now.
    TempError,
    /// The store cannot open the mailbox.
    PermError,
}

impl LoginResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Failed => "failed",
            LoginResult::InUse => "in_use",
            LoginResult::Denied => "denied",
            LoginResult::TempError => "temp_error",
            LoginResult::PermError => "perm_error",
        }
    }
}

/// How taking a mailbox lock ended: the `result` label of the lock metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockResult {
    Ok,
    InUse,
    Error,
}

impl LockResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LockResult::Ok => "ok",
            LockResult::InUse => "in_use",
            LockResult::Error => "error",
        }
    }
}

/// The one-line record of a finished session.
#[derive(Clone, Debug)]
pub struct SessionSummary {
    pub id: SessionId,
    pub client: SocketAddr,
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub commands: u64,
    pub bytes_sent: u64,
    pub retrieved: u64,
    pub deleted: u64,
    pub duration: Duration,
    pub outcome: Outcome,
    /// Whether the session reached TRANSACTION (its login completed); a
    /// login whose credentials were good but that was refused (mailbox in
    /// use, LOGIN-DELAY) leaves `tenant` and `user` set and this false.
    pub logged_in: bool,
}

pub trait SessionObserver: Send + Sync {
    fn connection_accepted(&self) {}
    fn connection_rejected(&self, _reason: &'static str) {}
    fn command(&self, _tenant: Option<&str>, _command: &'static str, _ok: bool) {}
    /// `result`: `ok`, `failed`, `in_use`, `temp_error`, `perm_error`, `denied`.
    /// `ok` is reported once per session at most: the session is in
    /// TRANSACTION from then on.
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
    /// A store operation of a logged-in session of `tenant` failed (also
    /// reported by [`SessionObserver::store_operation`], which knows the
    /// backend but not the tenant).
    fn tenant_store_error(&self, _tenant: &str, _op: &'static str) {}
    /// `bytes` were written to a client, reported as each write completes
    /// (a RETR in chunks of at most ~64 KiB) under the session's tenant.
    /// Bytes written before the credentials name a tenant are reported when
    /// they do, or under `None` when the session ends without. The sum is
    /// the session's [`SessionSummary::bytes_sent`].
    fn bytes_sent(&self, _tenant: Option<&str>, _bytes: u64) {}
    fn session_started(&self) {}
    fn session_ended(&self, _summary: &SessionSummary) {}
    /// A TLS handshake completed. `mode`: `starttls` or `implicit`; or
    /// `proxy`: a trusted balancer terminated the client's TLS and said so
    /// in its PROXY v2 header.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_prefix_dash_counter() {
        let id = SessionId {
            process: 0x8f3a1c2e,
            seq: 17,
        };
        assert_eq!(id.to_string(), "8f3a1c2e-000017");
        let small = SessionId {
            process: 0xab,
            seq: 1_234_567,
        };
        assert_eq!(small.to_string(), "000000ab-1234567");
        let (a, b) = (SessionId::next(), SessionId::next());
        assert_eq!(a.process, b.process, "one prefix per process");
        assert!(b.seq > a.seq);
        let text = a.to_string();
        let (prefix, seq) = text.split_once('-').unwrap();
        assert_eq!(prefix.len(), 8);
        assert!(
            prefix
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(seq.len() >= 6 && seq.bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(text.parse::<SessionId>(), Ok(a));
        assert_eq!("000000ab-1234567".parse::<SessionId>(), Ok(small));
        for bad in [
            "",
            "8f3a1c2e",
            "8f3a1c2e-",
            "8f3a1c2-000001",
            "8f3a1c2e-+1",
            "zz3a1c2e-000001",
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad}");
        }
    }
}
