//! Readiness: whether this instance should get traffic now.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use popgate_lock::MailboxLocks;
use popgate_server::{Shared, Tenant};

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

/// Readiness of a POP3 server from its seams: listeners up, not draining,
/// the lock service, and every tenant's directory and store answer `ping()`.
pub struct ServerReadiness {
    state: Arc<ServeState>,
    locks: Arc<dyn MailboxLocks>,
    tenants: Vec<Arc<Tenant>>,
    ping_timeout: Duration,
}

impl ServerReadiness {
    pub fn new(
        state: Arc<ServeState>,
        locks: Arc<dyn MailboxLocks>,
        tenants: impl IntoIterator<Item = Arc<Tenant>>,
    ) -> Self {
        let mut tenants: Vec<_> = tenants.into_iter().collect();
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        ServerReadiness {
            state,
            locks,
            tenants,
            ping_timeout: Duration::from_secs(2),
        }
    }

    /// The checks of a server's shared parts.
    pub fn of(shared: &Shared, state: Arc<ServeState>) -> Self {
        Self::new(state, shared.locks.clone(), shared.tenants.iter().cloned())
    }

    /// How long one `ping()` may take before it counts as failed (default 2s).
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    async fn ping<E: std::fmt::Display>(
        &self,
        name: String,
        ping: impl Future<Output = Result<(), E>>,
    ) -> Result<(), String> {
        match tokio::time::timeout(self.ping_timeout, ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(check = %name, error = %e, "not ready");
                Err(name)
            }
            Err(_) => {
                tracing::warn!(check = %name, timeout = ?self.ping_timeout, "not ready: ping timed out");
                Err(name)
            }
        }
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
        let locks = &self.locks;
        self.ping(format!("locks ({})", locks.backend()), locks.ping())
            .await?;
        for t in &self.tenants {
            self.ping(format!("directory (tenant {})", t.name), t.directory.ping())
                .await?;
            self.ping(format!("store (tenant {})", t.name), t.store.ping())
                .await?;
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

        async fn user_exists(
            &self,
            _: popgate_auth::Login<'_>,
        ) -> Result<bool, popgate_auth::AuthError> {
            Ok(false)
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
    async fn each_check_in_turn() {
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
        let state = Arc::new(ServeState::default());
        let ready = ServerReadiness::new(
            state.clone(),
            Arc::new(Locks(locks.clone())),
            [Arc::new(tenant)],
        )
        .ping_timeout(Duration::from_millis(50));

        assert_eq!(ready.check().await, Err("listeners".into()));
        state.set_listening();
        assert_eq!(ready.check().await, Ok(()));

        locks.0.store(true, Ordering::SeqCst);
        assert_eq!(ready.check().await, Err("locks (fake)".into()));
        locks.0.store(false, Ordering::SeqCst);

        dir.0.store(true, Ordering::SeqCst);
        assert_eq!(ready.check().await, Err("directory (tenant acme)".into()));
        dir.0.store(false, Ordering::SeqCst);

        store.0.store(true, Ordering::SeqCst);
        assert_eq!(ready.check().await, Err("store (tenant acme)".into()));
        store.0.store(false, Ordering::SeqCst);

        hang.0.store(true, Ordering::SeqCst);
        assert_eq!(ready.check().await, Err("store (tenant acme)".into()));
        hang.0.store(false, Ordering::SeqCst);
        assert_eq!(ready.check().await, Ok(()));

        state.set_draining();
        assert_eq!(ready.check().await, Err("draining".into()));
    }
}
