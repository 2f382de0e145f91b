//! The `MailboxLocks` seam: RFC 1939 wants an exclusive lock on a maildrop
//! for the whole session. This crate holds the trait and the in-process
//! implementation; a fleet uses the Redis one (crate `backend-redis`). The
//! [`limits`] module holds the `Limits` seam and `MemoryLimits`; the
//! `conformance` kit (feature `conformance`) holds the rules every backend
//! of either seam must pass.
//!
//! Every lock carries a fencing token that grows with each acquisition of the
//! same mailbox, so a store can refuse a commit from a holder whose lock was
//! lost and taken over by a newer session. Fences are at least the current
//! time in microseconds since the epoch (see `backend_redis::locks` for why), so they also
//! grow across restarts and across a switch between backends.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod limits;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

/// Why a lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another session holds the mailbox: `-ERR [IN-USE]`.
    #[error("mailbox is in use by another session")]
    InUse,
    /// The lock service is unreachable or failed: `-ERR [SYS/TEMP]`.
    #[error("lock service unavailable: {0}")]
    Unavailable(String),
}

/// A held mailbox lock. Dropping it releases the lock (in the background for
/// remote backends); [`LockGuard::release`] releases it and waits.
#[async_trait]
pub trait LockGuard: Send + Sync {
    /// The fencing token of this acquisition: larger than every earlier one
    /// for the same mailbox.
    fn fence(&self) -> u64;

    /// A receiver that turns `true` once the lock is known to be lost
    /// (expired, taken over, or the lock service unreachable for too long).
    fn lost(&self) -> watch::Receiver<bool>;

    /// Whether the lock can no longer be trusted without asking its service:
    /// its lease ran out since the last renewal (a process stopped past the
    /// ttl comes back here, with commands waiting, before its renewal runs).
    /// Cheap and local; the session asks before every command. Once `true`,
    /// `lost()` reports it too.
    fn expired(&self) -> bool {
        false
    }

    /// Confirms, just before a commit, that the lock is still held.
    async fn verify(&self) -> Result<(), LockError>;

    /// Releases the lock and waits until it is released.
    async fn release(self: Box<Self>);
}

/// Exclusive, fleet-wide or process-wide, locks on mailboxes.
#[async_trait]
pub trait MailboxLocks: Send + Sync {
    /// A short name for logs and metrics: `memory`, `redis`.
    fn backend(&self) -> &'static str;

    /// Takes the lock on `key` (a tenant-qualified mailbox name) or fails at
    /// once with [`LockError::InUse`] when someone else holds it.
    async fn acquire(&self, key: &str) -> Result<Box<dyn LockGuard>, LockError>;

    /// Checks that the lock service is reachable (readiness).
    async fn ping(&self) -> Result<(), LockError> {
        Ok(())
    }
}

/// In-process locks: exclusive within one popgate process. Right for a
/// single replica; a fleet needs the Redis backend.
#[derive(Default, Clone)]
pub struct MemoryLocks {
    inner: Arc<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    held: Mutex<HashMap<String, u64>>,
    next_fence: AtomicU64,
}

impl MemoryLocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many mailboxes are locked now.
    pub fn held(&self) -> usize {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[async_trait]
impl MailboxLocks for MemoryLocks {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn acquire(&self, key: &str) -> Result<Box<dyn LockGuard>, LockError> {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.contains_key(key) {
            return Err(LockError::InUse);
        }
        // Fences increase across all mailboxes, which keeps them increasing
        // per mailbox too, also across lock releases; starting from the clock
        // keeps them increasing across restarts (a store's fence file
        // outlives the process).
        let now = now_micros();
        let previous = self
            .inner
            .next_fence
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                Some((f + 1).max(now))
            })
            .unwrap_or_else(|f| f);
        let fence = (previous + 1).max(now);
        held.insert(key.to_owned(), fence);
        let (lost_tx, _) = watch::channel(false);
        Ok(Box::new(MemoryGuard {
            inner: self.inner.clone(),
            key: key.to_owned(),
            fence,
            lost_tx,
        }))
    }
}

/// Microseconds since the Unix epoch (0 on a clock before 1970).
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct MemoryGuard {
    inner: Arc<MemoryInner>,
    key: String,
    fence: u64,
    lost_tx: watch::Sender<bool>,
}

#[async_trait]
impl LockGuard for MemoryGuard {
    fn fence(&self) -> u64 {
        self.fence
    }

    fn lost(&self) -> watch::Receiver<bool> {
        self.lost_tx.subscribe()
    }

    async fn verify(&self) -> Result<(), LockError> {
        let held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.get(&self.key) {
            Some(&f) if f == self.fence => Ok(()),
            _ => Err(LockError::Unavailable("lock no longer held".into())),
        }
    }

    async fn release(self: Box<Self>) {
        drop(self);
    }
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.get(&self.key) == Some(&self.fence) {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Memory;

    impl conformance::LockBackend for Memory {
        fn instance(&self) -> Box<dyn MailboxLocks> {
            Box::new(MemoryLocks::new())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_locks_pass_the_conformance_kit() {
        conformance::run_locks(&Memory, "tenant-x").await;
    }

    #[tokio::test]
    async fn held_counts_the_locked_mailboxes() {
        let locks = MemoryLocks::new();
        let a = locks.acquire("t/bob").await.unwrap();
        let b = locks.acquire("t/alice").await.unwrap();
        assert_eq!(locks.held(), 2);
        a.release().await;
        assert_eq!(locks.held(), 1);
        drop(b);
        assert_eq!(locks.held(), 0);
    }

    #[tokio::test]
    async fn fences_start_from_the_clock() {
        // A restarted process must not hand out fences below the ones a
        // store has already committed.
        let before = now_micros();
        let first = MemoryLocks::new().acquire("t/bob").await.unwrap().fence();
        let second = MemoryLocks::new().acquire("t/bob").await.unwrap().fence();
        assert!(first >= before);
        assert!(second >= first);
    }
}
