//! The password-hashing pool: a fixed number of slots in which password
//! checks run (on tokio's blocking pool), shared by every tenant's
//! directory, with the cost caps that stored hashes must keep to.
//!
//! The binary makes one [`HashPool`] from its configuration and hands each
//! tenant's directory a [`Hashing`] handle for that tenant. Three rules keep
//! hashing from being turned against the service:
//! - at most `slots` checks run at once, so memory for argon2 is bounded by
//!   `slots` times [`CostLimits::argon2_max_memory_kib`];
//! - a login waits at most `wait` for a slot, then fails with an
//!   [`AuthError`] (POP3 `-ERR [SYS/TEMP]`) instead of queueing without end;
//! - one tenant holds at most `tenant_slots` slots at once (by default all
//!   but one), so a flood of logins to one tenant always leaves a slot that
//!   the other tenants' logins reach.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::AuthError;
use crate::scheme::CostLimits;

/// The pool's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashPoolConfig {
    /// Password checks that run at once.
    pub slots: usize,
    /// The most slots one tenant holds at once; `None`: `slots - 1` (at
    /// least 1).
    pub tenant_slots: Option<usize>,
    /// How long a login waits for a slot before it fails with [SYS/TEMP].
    pub wait: Duration,
    /// What a stored hash may cost.
    pub limits: CostLimits,
}

impl HashPoolConfig {
    /// The default number of slots: one per CPU this process may use
    /// (cgroup quotas count), at least 2 and at most 8, so that the default
    /// argon2 cap (64 MiB) times the slots stays at 512 MiB or less.
    pub fn default_slots() -> usize {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8)
    }

    /// The slots one tenant may hold at once.
    pub fn tenant_share(&self) -> usize {
        let slots = self.slots.max(1);
        self.tenant_slots
            .unwrap_or(slots.saturating_sub(1))
            .clamp(1, slots)
    }
}

impl Default for HashPoolConfig {
    fn default() -> Self {
        HashPoolConfig {
            slots: HashPoolConfig::default_slots(),
            tenant_slots: None,
            wait: Duration::from_secs(5),
            limits: CostLimits::DEFAULT,
        }
    }
}

/// The process's hashing slots.
pub struct HashPool {
    config: HashPoolConfig,
    slots: Arc<Semaphore>,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Checks waiting for their tenant's share or a slot.
    waiting: AtomicUsize,
}

impl HashPool {
    pub fn new(config: HashPoolConfig) -> Arc<HashPool> {
        let config = HashPoolConfig {
            slots: config.slots.max(1),
            ..config
        };
        Arc::new(HashPool {
            slots: Arc::new(Semaphore::new(config.slots)),
            config,
            tenants: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
        })
    }

    pub fn config(&self) -> &HashPoolConfig {
        &self.config
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Slots in use now.
    pub fn busy(&self) -> usize {
        self.config.slots.saturating_sub(self.available())
    }

    /// Password checks waiting now for a slot or for their tenant's share.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The handle a tenant's directory hashes through. Handles of one
    /// tenant name share that tenant's share of the slots.
    pub fn for_tenant(self: &Arc<Self>, tenant: &str) -> Hashing {
        let share = self
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.tenant_share())))
            .clone();
        Hashing {
            pool: self.clone(),
            share,
            tenant: tenant.into(),
        }
    }
}

impl fmt::Debug for HashPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashPool")
            .field("config", &self.config)
            .field("available", &self.available())
            .finish_non_exhaustive()
    }
}

/// One tenant's way into the [`HashPool`].
#[derive(Clone)]
pub struct Hashing {
    pool: Arc<HashPool>,
    share: Arc<Semaphore>,
    tenant: Arc<str>,
}

impl Hashing {
    /// A pool of its own with the default settings: for tools and tests.
    /// A server passes every directory a handle of its one shared pool.
    pub fn standalone() -> Hashing {
        HashPool::new(HashPoolConfig::default()).for_tenant("")
    }

    /// What a stored hash may cost.
    pub fn limits(&self) -> &CostLimits {
        &self.pool.config.limits
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn pool(&self) -> &Arc<HashPool> {
        &self.pool
    }

    /// Runs `f` (a password check, and the file access that comes with it)
    /// in a slot, on tokio's blocking pool. Waits at most the pool's `wait`
    /// for the tenant's share and a slot, then fails. The slot is held
    /// until `f` returns, even when the caller stops waiting.
    pub async fn run<T, F>(&self, f: F) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let wait = self.pool.config.wait;
        // Counted as waiting until the permits are had, the wait times out,
        // or the caller gives up (the future is dropped).
        let queued = Queued::enter(&self.pool.waiting);
        let acquire = async {
            let share = self.share.clone().acquire_owned().await?;
            let slot = self.pool.slots.clone().acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>((share, slot))
        };
        let acquired = tokio::time::timeout(wait, acquire).await;
        drop(queued);
        let permits = match acquired {
            Ok(Ok(permits)) => permits,
            Ok(Err(_)) => return Err(AuthError("password hashing pool closed".into())),
            Err(_) => {
                return Err(AuthError(format!(
                    "no password-hashing slot free within {wait:?} ({} slots, all busy or \
                     this tenant's share of {} in use)",
                    self.pool.config.slots,
                    self.pool.config.tenant_share()
                )));
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permits = permits;
            f()
        })
        .await
        .map_err(|e| AuthError(format!("password check aborted: {e}")))
    }
}

/// One entry of [`HashPool::waiting`], left when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Queued(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Hashing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hashing")
            .field("tenant", &self.tenant)
            .field("pool", &self.pool)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_share_leaves_a_slot() {
        let share = |slots, tenant_slots| {
            HashPoolConfig {
                slots,
                tenant_slots,
                ..HashPoolConfig::default()
            }
            .tenant_share()
        };
        assert_eq!(share(1, None), 1);
        assert_eq!(share(2, None), 1);
        assert_eq!(share(8, None), 7);
        assert_eq!(share(8, Some(4)), 4);
        assert_eq!(share(8, Some(0)), 1);
        assert_eq!(share(2, Some(5)), 2);
        assert!((2..=8).contains(&HashPoolConfig::default_slots()));
    }

    #[tokio::test]
    async fn busy_slots_and_waiting_checks_are_counted() {
        let pool = HashPool::new(HashPoolConfig {
            slots: 1,
            wait: Duration::from_secs(10),
            ..HashPoolConfig::default()
        });
        let (a, b) = (pool.for_tenant("a"), pool.for_tenant("b"));
        assert_eq!((pool.busy(), pool.waiting()), (0, 0));
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn(async move { a.run(move || hold_rx.recv().is_ok()).await });
        while pool.busy() == 0 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn(async move { b.run(|| true).await });
        while pool.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!((pool.busy(), pool.waiting()), (1, 1));
        // A waiting check whose caller gives up is no longer counted.
        second.abort();
        let _ = second.await;
        assert_eq!(pool.waiting(), 0);
        hold_tx.send(()).unwrap();
        assert!(first.await.unwrap().unwrap());
        assert_eq!((pool.busy(), pool.waiting()), (0, 0));
    }
}
