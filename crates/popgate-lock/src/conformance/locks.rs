//! The rules of [`MailboxLocks`] and [`LockGuard`].

use std::time::Duration;

use async_trait::async_trait;

use crate::{LockError, LockGuard, MailboxLocks};

/// How long a backend may take to free the lock of a dropped guard (a
/// remote backend releases it in the background).
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

/// A lock backend under test.
#[async_trait]
pub trait LockBackend: Send + Sync {
    /// One more instance, as another process (or this one restarted) would
    /// make it: the same settings and the same shared state, if any. Its
    /// `acquire` must not wait for a mailbox in use (no `wait`).
    fn instance(&self) -> Box<dyn MailboxLocks>;

    /// Whether two instances exclude each other: a fleet backend (Redis).
    /// In-process locks are per instance.
    fn shared(&self) -> bool {
        false
    }

    /// Takes the lock on `key` away from its holder behind its back, as an
    /// expiry or a failover would, and leaves the mailbox free. `false`
    /// when nothing can take a lock away from this backend (in-process
    /// locks); the kit then skips the rules about lost locks.
    async fn take_away(&self, _key: &str) -> bool {
        false
    }

    /// How long a lock taken away may stay unnoticed before
    /// [`LockGuard::lost`] turns true (for Redis, about the ttl).
    fn loss_noticed_within(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// Runs every rule against `backend`, on mailbox keys that start with
/// `prefix` (choose a fresh one per run, so an earlier run's leftovers do
/// not count).
pub async fn run_locks(backend: &dyn LockBackend, prefix: &str) {
    let key = |name: &str| format!("{prefix}/{name}@conformance.example");
    let locks = backend.instance();
    assert!(!locks.backend().is_empty(), "backend() names the backend");
    locks.ping().await.expect("ping of a working backend");

    exclusive_until_released(&*locks, &key("exclusive")).await;
    a_dropped_guard_frees_the_lock(&*locks, &key("dropped")).await;
    keys_are_independent(&*locks, &key("left"), &key("right")).await;
    fences_strictly_increase(backend, &key("fences")).await;
    if backend.shared() {
        instances_exclude_each_other(backend, &key("fleet")).await;
    }
    if backend.take_away(&key("probe")).await {
        a_lock_taken_away_fails_verify(backend, &key("taken")).await;
        a_lock_taken_away_is_reported_lost(backend, &key("lost")).await;
    }
}

async fn acquire(locks: &dyn MailboxLocks, key: &str) -> Box<dyn LockGuard> {
    locks
        .acquire(key)
        .await
        .unwrap_or_else(|e| panic!("acquire of free mailbox {key}: {e}"))
}

fn assert_in_use(r: Result<Box<dyn LockGuard>, LockError>, what: &str) {
    match r {
        Err(LockError::InUse) => {}
        Err(e) => panic!("{what}: expected InUse, got {e}"),
        Ok(g) => panic!(
            "{what}: expected InUse, got a second lock (fence {})",
            g.fence()
        ),
    }
}

/// Acquires `key` once it is free, within [`RELEASE_WITHIN`].
async fn acquire_once_free(locks: &dyn MailboxLocks, key: &str, what: &str) -> Box<dyn LockGuard> {
    let until = tokio::time::Instant::now() + RELEASE_WITHIN;
    loop {
        match locks.acquire(key).await {
            Ok(g) => return g,
            Err(LockError::InUse) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{what}: {key} still not free after {RELEASE_WITHIN:?}: {e}"),
        }
    }
}

async fn exclusive_until_released(locks: &dyn MailboxLocks, key: &str) {
    let held = acquire(locks, key).await;
    assert!(!*held.lost().borrow(), "a lock just taken is not lost");
    held.verify().await.expect("verify of a lock held");
    assert_in_use(
        locks.acquire(key).await,
        "a second acquire of a held mailbox",
    );
    held.release().await;
    let again = locks
        .acquire(key)
        .await
        .expect("release frees the mailbox at once");
    again.release().await;
}

async fn a_dropped_guard_frees_the_lock(locks: &dyn MailboxLocks, key: &str) {
    drop(acquire(locks, key).await);
    let again = acquire_once_free(locks, key, "a dropped guard frees the lock").await;
    again.release().await;
}

async fn keys_are_independent(locks: &dyn MailboxLocks, left: &str, right: &str) {
    let l = acquire(locks, left).await;
    let r = locks
        .acquire(right)
        .await
        .expect("another mailbox is free while one is held");
    l.release().await;
    r.verify()
        .await
        .expect("releasing one mailbox leaves another held");
    assert_in_use(
        locks.acquire(right).await,
        "releasing one mailbox frees no other",
    );
    let l = acquire(locks, left).await;
    l.release().await;
    r.release().await;
}

async fn fences_strictly_increase(backend: &dyn LockBackend, key: &str) {
    let locks = backend.instance();
    let mut last = 0;
    for round in 0..10 {
        let g = acquire(&*locks, key).await;
        assert!(
            g.fence() > last,
            "round {round}: fence {} after {last}",
            g.fence()
        );
        last = g.fence();
        if round % 2 == 0 {
            g.release().await;
        } else {
            drop(g);
            let again = acquire_once_free(&*locks, key, "fences").await;
            assert!(
                again.fence() > last,
                "round {round}: after a dropped guard, fence {} after {last}",
                again.fence()
            );
            last = again.fence();
            again.release().await;
        }
    }
    // A restarted process (a new instance) hands out larger fences still:
    // a store that keeps the newest fence it committed must never see one
    // go back.
    drop(locks);
    // A restart takes time; fences may run a few microseconds ahead of
    // the clock (see `backend_redis::locks`), never milliseconds.
    std::thread::sleep(Duration::from_millis(2));
    let restarted = backend.instance();
    let g = acquire(&*restarted, key).await;
    assert!(
        g.fence() > last,
        "after a restart: fence {} after {last}",
        g.fence()
    );
    g.release().await;
}

async fn instances_exclude_each_other(backend: &dyn LockBackend, key: &str) {
    let (a, b) = (backend.instance(), backend.instance());
    let held = acquire(&*a, key).await;
    assert_in_use(b.acquire(key).await, "another process's acquire");
    let first = held.fence();
    held.release().await;
    let taken = b
        .acquire(key)
        .await
        .expect("another process gets a released mailbox");
    assert!(taken.fence() > first, "fences grow across processes");
    assert_in_use(a.acquire(key).await, "the first process's acquire");
    taken.release().await;
}

async fn a_lock_taken_away_fails_verify(backend: &dyn LockBackend, key: &str) {
    let (a, b) = (backend.instance(), backend.instance());
    let old = acquire(&*a, key).await;
    assert!(backend.take_away(key).await);
    assert!(
        matches!(old.verify().await, Err(LockError::Unavailable(_))),
        "verify of a lock taken away must fail"
    );
    let mut lost = old.lost();
    tokio::time::timeout(backend.loss_noticed_within(), lost.wait_for(|&l| l))
        .await
        .expect("a failed verify reports the loss")
        .expect("lost() stays open while the guard lives");
    // The mailbox went to a new holder: the old one's release spares it.
    let new = b
        .acquire(key)
        .await
        .expect("a mailbox whose lock was taken away is free");
    assert!(
        new.fence() > old.fence(),
        "the new holder's fence is larger"
    );
    old.release().await;
    new.verify()
        .await
        .expect("the old holder's release leaves the new holder's lock");
    assert_in_use(
        a.acquire(key).await,
        "the old holder's release frees no lock of the new holder",
    );
    new.release().await;
}

async fn a_lock_taken_away_is_reported_lost(backend: &dyn LockBackend, key: &str) {
    let locks = backend.instance();
    let held = acquire(&*locks, key).await;
    let mut lost = held.lost();
    assert!(backend.take_away(key).await);
    tokio::time::timeout(backend.loss_noticed_within(), lost.wait_for(|&l| l))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a lock taken away is reported lost within {:?}",
                backend.loss_noticed_within()
            )
        })
        .expect("lost() stays open while the guard lives");
    assert!(held.verify().await.is_err(), "verify of a lost lock fails");
    held.release().await;
}
