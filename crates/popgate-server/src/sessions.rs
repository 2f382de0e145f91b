//! The live sessions of this process, for `popgate who` and `popgate kick`.
//!
//! A session registers when its login completes (TRANSACTION) and leaves
//! the registry when it ends, whatever the way (its [`Registration`] is
//! dropped). Its bytes-sent counter is the connection's own, so a listing
//! shows a long RETR as it runs. A kick tells the session through a watch:
//! the session ends as one whose lock was lost (nothing deleted,
//! `-ERR [SYS/TEMP]`), except that it frees the lock *before* answering,
//! so the client's next login finds the mailbox free.
//!
//! The registry is process-wide and outlives reloads; a fleet publishes it
//! to the lock service (the binary's `admin` module does).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::observer::SessionId;

/// One live, logged-in session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub tenant: String,
    /// The login, `local@domain`.
    pub user: String,
    /// The client's address (after PROXY).
    pub client: SocketAddr,
    /// When the login completed.
    pub since: SystemTime,
    /// Bytes written to the client so far, greeting and login included.
    pub bytes_sent: u64,
}

/// Which sessions a listing or a kick means: every field given must match
/// (ASCII case-insensitively, as logins are); none given matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub tenant: Option<String>,
    pub user: Option<String>,
}

impl SessionFilter {
    pub fn matches(&self, tenant: &str, user: &str) -> bool {
        let ok = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
        };
        ok(&self.tenant, tenant) && ok(&self.user, user)
    }

    /// Whether the filter names nothing (it would match every session).
    pub fn is_empty(&self) -> bool {
        self.tenant.is_none() && self.user.is_none()
    }
}

struct Entry {
    tenant: String,
    user: String,
    client: SocketAddr,
    since: SystemTime,
    bytes: Arc<AtomicU64>,
    kick: watch::Sender<bool>,
}

impl Entry {
    fn info(&self, id: SessionId) -> SessionInfo {
        SessionInfo {
            id,
            tenant: self.tenant.clone(),
            user: self.user.clone(),
            client: self.client,
            since: self.since,
            bytes_sent: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The live sessions of this process.
pub struct SessionRegistry {
    entries: Mutex<HashMap<SessionId, Entry>>,
    /// Bumped on every login and every end, for a publisher to follow.
    changed: watch::Sender<u64>,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        SessionRegistry {
            entries: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }
}

impl SessionRegistry {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session that has just logged in; it stays listed until the
    /// returned registration is dropped.
    pub fn register(
        self: &Arc<Self>,
        id: SessionId,
        tenant: &str,
        user: &str,
        client: SocketAddr,
        bytes: Arc<AtomicU64>,
    ) -> Registration {
        let (kick, kicked) = watch::channel(false);
        self.entries().insert(
            id,
            Entry {
                tenant: tenant.to_owned(),
                user: user.to_owned(),
                client,
                since: SystemTime::now(),
                bytes,
                kick,
            },
        );
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        Registration {
            registry: self.clone(),
            id,
            kicked,
        }
    }

    /// The sessions `filter` matches, oldest first.
    pub fn list(&self, filter: &SessionFilter) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .entries()
            .iter()
            .filter(|(_, e)| filter.matches(&e.tenant, &e.user))
            .map(|(id, e)| e.info(*id))
            .collect();
        out.sort_by_key(|s| (s.since, s.id.seq));
        out
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells the sessions with these ids to end; returns those that were
    /// still live (ids of sessions already gone are ignored).
    pub fn kick(&self, ids: &[SessionId]) -> Vec<SessionInfo> {
        let entries = self.entries();
        ids.iter()
            .filter_map(|id| {
                let e = entries.get(id)?;
                e.kick.send_replace(true);
                Some(e.info(*id))
            })
            .collect()
    }

    /// A receiver that changes whenever a session logs in or ends.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn remove(&self, id: SessionId) {
        if self.entries().remove(&id).is_some() {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// A session's place in the registry: dropping it removes the session.
pub struct Registration {
    registry: Arc<SessionRegistry>,
    id: SessionId,
    kicked: watch::Receiver<bool>,
}

impl Registration {
    /// Resolves once an administrator has kicked the session.
    pub async fn kicked(&mut self) {
        // The sender lives in the registry as long as this registration.
        let _ = self.kicked.wait_for(|&k| k).await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(seq: u64) -> SessionId {
        SessionId { process: 7, seq }
    }

    fn client() -> SocketAddr {
        "192.0.2.1:4000".parse().unwrap()
    }

    #[test]
    fn a_session_is_listed_from_login_until_its_registration_drops() {
        let reg = SessionRegistry::new();
        let bytes = Arc::new(AtomicU64::new(10));
        let r = reg.register(id(1), "acme", "bob@acme.example", client(), bytes.clone());
        let listed = reg.list(&SessionFilter::default());
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].user, "bob@acme.example");
        assert_eq!(listed[0].bytes_sent, 10);
        // The count is the connection's own: a listing shows it growing.
        bytes.fetch_add(5000, Ordering::Relaxed);
        assert_eq!(reg.list(&SessionFilter::default())[0].bytes_sent, 5010);
        drop(r);
        assert!(reg.is_empty());
        assert!(reg.list(&SessionFilter::default()).is_empty());
    }

    #[test]
    fn filters_match_tenant_and_user_case_insensitively() {
        let reg = SessionRegistry::new();
        let b = Arc::new(AtomicU64::new(0));
        let _a = reg.register(id(1), "acme", "bob@acme.example", client(), b.clone());
        let _c = reg.register(id(2), "acme", "carol@acme.example", client(), b.clone());
        let _g = reg.register(id(3), "globex", "eve@globex.example", client(), b);
        let f = |tenant: Option<&str>, user: Option<&str>| SessionFilter {
            tenant: tenant.map(Into::into),
            user: user.map(Into::into),
        };
        let ids = |filter: SessionFilter| -> Vec<u64> {
            let mut v: Vec<u64> = reg.list(&filter).iter().map(|s| s.id.seq).collect();
            v.sort();
            v
        };
        assert_eq!(ids(f(None, None)), vec![1, 2, 3]);
        assert_eq!(ids(f(Some("ACME"), None)), vec![1, 2]);
        assert_eq!(ids(f(None, Some("Bob@Acme.Example"))), vec![1]);
        assert_eq!(
            ids(f(Some("globex"), Some("bob@acme.example"))),
            Vec::<u64>::new()
        );
        assert!(f(None, None).is_empty());
        assert!(!f(Some("acme"), None).is_empty());
    }

    #[tokio::test]
    async fn a_kick_reaches_only_the_sessions_named() {
        let reg = SessionRegistry::new();
        let b = Arc::new(AtomicU64::new(0));
        let mut bob = reg.register(id(1), "acme", "bob@acme.example", client(), b.clone());
        let mut eve = reg.register(id(2), "globex", "eve@globex.example", client(), b);
        let kicked = reg.kick(&[id(1), id(99)]);
        assert_eq!(kicked.len(), 1, "the unknown id is ignored");
        assert_eq!(kicked[0].id, id(1));
        tokio::time::timeout(Duration::from_secs(1), bob.kicked())
            .await
            .expect("bob is told");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), eve.kicked())
                .await
                .is_err(),
            "eve is not"
        );
        // A kicked session stays listed until it has ended.
        assert_eq!(reg.len(), 2);
        drop(bob);
        assert_eq!(reg.len(), 1);
    }

    #[tokio::test]
    async fn logins_and_ends_are_announced() {
        let reg = SessionRegistry::new();
        let mut changes = reg.changes();
        changes.mark_unchanged();
        let r = reg.register(id(1), "acme", "bob@acme.example", client(), Arc::default());
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        drop(r);
        assert!(changes.has_changed().unwrap());
    }
}
