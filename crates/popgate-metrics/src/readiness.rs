//! Readiness: whether this instance should get traffic now.

use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What `/readyz` asks. The binary decides what "ready" means.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// `Ok` when ready; otherwise the name of the first failing check
    /// (shown in the 503 body, so no secrets or addresses in it).
    async fn check(&self) -> Result<(), String>;
}

/// The process's serving phase, flipped by the binary: listening once the
/// POP3 listeners are bound and serving, draining once shutdown has begun.
#[derive(Debug, Default)]
pub struct ServeState {
    listening: AtomicBool,
    draining: AtomicBool,
}

impl ServeState {
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Readiness of this process, and only of what it controls: its listeners
/// are up and it is not draining. Backends (a tenant's database, the lock
/// service) are watched by [`crate::BackendMonitor`] instead: they are
/// shared by every replica, so taking replicas out of the Service for them
/// would only add the other tenants to the outage.
pub struct ServerReadiness {
    state: Arc<ServeState>,
}

impl ServerReadiness {
    pub fn new(state: Arc<ServeState>) -> Self {
        ServerReadiness { state }
    }
}

#[async_trait]
impl Readiness for ServerReadiness {
    async fn check(&self) -> Result<(), String> {
        if !self.state.is_listening() {
            return Err("listeners".into());
        }
        if self.state.is_draining() {
            return Err("draining".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use popgate_auth::{AuthError, Directory, Login, UserInfo};
    use popgate_lock::{LockError, LockGuard};
    use popgate_store::{MailStore, MailboxId, Maildrop, MessageStream, StoreError};

    use std::time::Duration;

    use popgate_lock::MailboxLocks;
    use popgate_server::Tenant;

    use super::*;

    #[derive(Default)]
    struct Down(AtomicBool);
    impl Down {
        fn is(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    struct Locks(Arc<Down>);
    #[async_trait]
    impl MailboxLocks for Locks {
        fn backend(&self) -> &'static str {
            "fake"
        }
        async fn acquire(&self, _key: &str) -> Result<Box<dyn LockGuard>, LockError> {
            Err(LockError::Unavailable("fake".into()))
        }
        async fn ping(&self) -> Result<(), LockError> {
            if self.0.is() {
                Err(LockError::Unavailable("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    struct Dir(Arc<Down>);
    #[async_trait]
    impl Directory for Dir {
        fn kind(&self) -> &'static str {
            "fake"
        }

        async fn find_user(&self, _: Login<'_>) -> Result<Option<UserInfo>, AuthError> {
            Ok(None)
        }
        async fn verify(
            &self,
            _login: Login<'_>,
            _password: &[u8],
        ) -> Result<Option<UserInfo>, AuthError> {
            Ok(None)
        }
        async fn ping(&self) -> Result<(), AuthError> {
            if self.0.is() {
                Err(AuthError("database is down".into()))
            } else {
                Ok(())
            }
        }
    }

    /// A store whose ping fails when `down`, or hangs when `hang`.
    struct Store {
        down: Arc<Down>,
        hang: Arc<Down>,
    }
    #[async_trait]
    impl MailStore for Store {
        fn backend(&self) -> &'static str {
            "fake"
        }
        async fn open(&self, _mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
            Err(StoreError::Temporary("fake".into()))
        }
        async fn append(
            &self,
            _mailbox: &MailboxId,
            _message: MessageStream,
        ) -> Result<String, StoreError> {
            Err(StoreError::Temporary("fake".into()))
        }
        async fn ping(&self) -> Result<(), StoreError> {
            if self.hang.is() {
                std::future::pending::<()>().await;
            }
            if self.down.is() {
                Err(StoreError::Temporary("bucket unreachable".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn backends_go_to_the_metric_and_the_page_not_to_readiness() {
        let (locks, dir, store, hang) = (
            Arc::new(Down::default()),
            Arc::new(Down::default()),
            Arc::new(Down::default()),
            Arc::new(Down::default()),
        );
        let tenant = Tenant::new(
            "acme",
            vec!["acme.example".into()],
            Arc::new(Dir(dir.clone())),
            Arc::new(Store {
                down: store.clone(),
                hang: hang.clone(),
            }),
        );
        let tenants = popgate_server::Tenants::new(vec![tenant]).unwrap();
        let shared = popgate_server::Shared {
            config: Default::default(),
            tenants,
            locks: Arc::new(Locks(locks.clone())),
            observer: Arc::new(popgate_server::observer::NoObserver),
            limits: Arc::new(popgate_lock::limits::MemoryLimits::new(Default::default())),
            tls: None,
            sessions: Default::default(),
        };
        let metrics = crate::Metrics::new("test", ["acme"]);
        let monitor = crate::BackendMonitor::of(&shared)
            .timing(Duration::from_secs(10), Duration::from_millis(50));
        let state = Arc::new(ServeState::default());
        let ready = ServerReadiness::new(state.clone());
        let up = |m: &crate::Metrics, tenant: &str, backend: &str| {
            let needle = format!(
                "popgate_backend_up{{backend=\"{backend}\",kind=\"fake\",tenant=\"{tenant}\"}} "
            );
            let text = m.render();
            let line = text
                .lines()
                .find(|l| l.starts_with(&needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"));
            line[needle.len()..].to_string()
        };

        assert_eq!(ready.check().await, Err("listeners".into()));
        state.set_listening();
        assert_eq!(ready.check().await, Ok(()));
        monitor.check_all(&metrics).await;
        assert_eq!(up(&metrics, "acme", "store"), "1");
        assert_eq!(up(&metrics, "-", "locks"), "1");

        store.0.store(true, Ordering::SeqCst);
        locks.0.store(true, Ordering::SeqCst);
        let status = monitor.check_all(&metrics).await;
        assert_eq!(up(&metrics, "acme", "store"), "0");
        assert_eq!(up(&metrics, "acme", "directory"), "1");
        assert_eq!(up(&metrics, "-", "locks"), "0");
        // The replica stays ready: the backends are not its own.
        assert_eq!(ready.check().await, Ok(()));
        let store_status = status.iter().find(|s| s.backend == "store").unwrap();
        assert_eq!(store_status.up, Some(false));
        assert!(
            monitor.render().contains("acme store fake down"),
            "{}",
            monitor.render()
        );
        assert!(
            monitor.render().contains("bucket unreachable"),
            "{}",
            monitor.render()
        );
        store.0.store(false, Ordering::SeqCst);
        locks.0.store(false, Ordering::SeqCst);

        // A hanging backend counts as down within the timeout.
        hang.0.store(true, Ordering::SeqCst);
        monitor.check_all(&metrics).await;
        assert_eq!(up(&metrics, "acme", "store"), "0");
        hang.0.store(false, Ordering::SeqCst);
        dir.0.store(true, Ordering::SeqCst);
        monitor.check_all(&metrics).await;
        assert_eq!(up(&metrics, "acme", "store"), "1");
        assert_eq!(up(&metrics, "acme", "directory"), "0");

        state.set_draining();
        assert_eq!(ready.check().await, Err("draining".into()));
    }
}
