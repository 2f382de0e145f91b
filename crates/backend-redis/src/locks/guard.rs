//! A held lock: the guard a session keeps, the task that renews the lock
//! while it lives, and the release when it ends.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use popgate_lock::{LockError, LockGuard};

use super::Inner;
use super::scripts::{RELEASE, RENEW};

/// What a guard and its renewal task share.
struct GuardShared {
    locks: Arc<Inner>,
    mailbox: String,
    lock_key: String,
    token: String,
    fence: u64,
    lost_tx: watch::Sender<bool>,
    /// When the last successful acquire or renewal was sent: the Redis key
    /// lives at least until this instant plus the ttl.
    last_ok: Mutex<Instant>,
}

impl GuardShared {
    fn deadline(&self) -> Instant {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) + self.locks.ttl - self.locks.margin
    }

    fn renewed(&self, sent: Instant) {
        let mut last = self.last_ok.lock().unwrap_or_else(|p| p.into_inner());
        if sent > *last {
            *last = sent;
        }
    }

    fn mark_lost(&self, why: &str) {
        if !self.lost_tx.send_replace(true) {
            tracing::warn!(mailbox = %self.mailbox, fence = self.fence, reason = why, "mailbox lock lost");
        }
    }

    fn is_lost(&self) -> bool {
        *self.lost_tx.borrow()
    }

    /// Compare-and-PEXPIRE: `Ok(true)` while the key holds our token.
    async fn renew(&self) -> Result<bool, LockError> {
        let ttl_ms = self.locks.ttl.as_millis() as u64;
        let sent = Instant::now();
        let n: i64 = self
            .locks
            .conn
            .run("renew", |mut conn| {
                let (key, token) = (self.lock_key.clone(), self.token.clone());
                async move {
                    RENEW
                        .key(key)
                        .arg(token)
                        .arg(ttl_ms)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        if n == 1 {
            self.renewed(sent);
        }
        Ok(n == 1)
    }

    /// Compare-and-DEL: whether our key was deleted.
    async fn release(&self) -> Result<bool, LockError> {
        let n: i64 = self
            .locks
            .conn
            .run("release", |mut conn| {
                let (key, token) = (self.lock_key.clone(), self.token.clone());
                async move { RELEASE.key(key).arg(token).invoke_async(&mut conn).await }
            })
            .await?;
        Ok(n == 1)
    }
}

impl Drop for GuardShared {
    fn drop(&mut self) {
        self.locks
            .held
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The renewal task: runs until the lock is lost or the guard stops it.
async fn keep(shared: Arc<GuardShared>) {
    let locks = shared.locks.clone();
    let mut next = Instant::now() + locks.renew_every;
    let mut reconnects = locks.conn.reconnects();
    loop {
        let deadline = shared.deadline();
        tokio::select! {
            () = tokio::time::sleep_until(next.min(deadline)) => {}
            // Redis is back after an outage and may have lost every key:
            // check now rather than at the next renewal, so a second
            // holder that got the mailbox from the emptied Redis overlaps
            // this one for a round trip, not for up to ttl/3.
            Ok(()) = reconnects.changed() => {
                tracing::debug!(mailbox = %shared.mailbox, fence = shared.fence, "redis is back: re-verifying the lock");
            }
        }
        if Instant::now() >= shared.deadline() {
            shared.mark_lost("no successful renewal within the ttl margin");
            return;
        }
        match shared.renew().await {
            Ok(true) => next = Instant::now() + locks.renew_every,
            Ok(false) => {
                shared.mark_lost("the lock expired or another session owns it");
                return;
            }
            Err(e) => {
                tracing::warn!(mailbox = %shared.mailbox, fence = shared.fence, error = %e, "lock renewal failed, retrying");
                next = Instant::now() + locks.retry_every;
            }
        }
    }
}

pub(super) struct RedisGuard {
    shared: Arc<GuardShared>,
    keeper: JoinHandle<()>,
    released: bool,
}

impl RedisGuard {
    /// The guard of a lock just acquired with `token` (`FENCE:OWNER`), its
    /// key known to live until `sent` plus the ttl; starts its renewal.
    pub(super) fn start(
        locks: Arc<Inner>,
        mailbox: &str,
        lock_key: String,
        token: String,
        fence: u64,
        sent: Instant,
    ) -> Self {
        let (lost_tx, _) = watch::channel(false);
        let shared = Arc::new(GuardShared {
            locks,
            mailbox: mailbox.to_owned(),
            lock_key,
            token,
            fence,
            lost_tx,
            last_ok: Mutex::new(sent),
        });
        shared
            .locks
            .held
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let keeper = tokio::spawn(keep(shared.clone()));
        RedisGuard {
            shared,
            keeper,
            released: false,
        }
    }
}

#[async_trait]
impl LockGuard for RedisGuard {
    fn fence(&self) -> u64 {
        self.shared.fence
    }

    fn lost(&self) -> watch::Receiver<bool> {
        self.shared.lost_tx.subscribe()
    }

    fn expired(&self) -> bool {
        let s = &self.shared;
        if !s.is_lost() && Instant::now() >= s.deadline() {
            s.mark_lost("no successful renewal within the ttl margin");
        }
        s.is_lost()
    }

    async fn verify(&self) -> Result<(), LockError> {
        let s = &self.shared;
        if s.is_lost() {
            return Err(LockError::Unavailable("the mailbox lock was lost".into()));
        }
        if Instant::now() >= s.deadline() {
            s.mark_lost("no successful renewal within the ttl margin");
            return Err(LockError::Unavailable(
                "the mailbox lock may have expired".into(),
            ));
        }
        if s.renew().await? {
            Ok(())
        } else {
            s.mark_lost("the lock expired or another session owns it");
            Err(LockError::Unavailable(
                "the mailbox lock is held by another session".into(),
            ))
        }
    }

    async fn release(mut self: Box<Self>) {
        self.released = true;
        self.keeper.abort();
        release_logged(&self.shared).await;
    }
}

async fn release_logged(shared: &GuardShared) {
    // Logged before the key goes, so that in the debug log every holder's
    // "lock acquired" .. "lock releasing" lies within its real holding time
    // (the lock audit of the end-to-end tests relies on it).
    tracing::debug!(mailbox = %shared.mailbox, fence = shared.fence, "lock releasing");
    match shared.release().await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(mailbox = %shared.mailbox, fence = shared.fence, "lock was already gone at release")
        }
        // The key expires by itself within the ttl.
        Err(e) => {
            tracing::warn!(mailbox = %shared.mailbox, fence = shared.fence, error = %e, "lock release failed")
        }
    }
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.keeper.abort();
        let shared = self.shared.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { release_logged(&shared).await });
        }
    }
}
