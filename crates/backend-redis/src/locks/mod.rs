//! Fleet-wide mailbox locks in Redis.
//!
//! # Keys
//!
//! Per mailbox (the store's `mailbox_key`), two keys that share a hash tag, so both land
//! in one Redis Cluster slot and one script may touch both:
//!
//! - `{prefix}:{mailbox}:lock`: the lock, `SET NX PX ttl`, whose value
//!   is the holder's token `FENCE:OWNER` (OWNER = this process's random
//!   instance id and a per-acquisition sequence number).
//! - `{prefix}:{mailbox}:fence`: the mailbox's fencing counter.
//!
//! # Fencing
//!
//! Acquisition is one Lua script (atomic, one round trip): if the lock key
//! exists the mailbox is in use; otherwise the script `INCR`s the fence key
//! and raises the result to at least the Redis server's clock in
//! microseconds since the epoch (`TIME`), stores that back, and sets the lock
//! key to `FENCE:OWNER` with `NX PX ttl`. So the fence is
//! `max(previous fence + 1, now in µs)`:
//!
//! - While the fence key lives, every later holder gets a strictly larger
//!   number, whatever the clocks do (the `INCR` part).
//! - If the fence key is lost (a Redis restart without persistence, a
//!   failover that lost the last writes, `FLUSHALL`, eviction), the next
//!   fence is the current time in µs, which is larger than every fence
//!   handed out before, because those were at most "their acquisition time
//!   in µs" (a mailbox cannot be locked, released and locked again within a
//!   microsecond, so the `+1` never runs ahead of the clock). That holds as
//!   long as the Redis server's clock does not step back across the loss.
//! - Fences stay below 2^53 (until the year 2255), so Lua's doubles carry
//!   them exactly.
//!
//! The fence key gets an idle expiry of [`FENCE_IDLE_EXPIRY`] (refreshed on
//! every acquisition), so a million mailboxes that were used once do not
//! keep a million keys forever; by the argument above its expiry is as
//! harmless as its loss.
//!
//! The in-process [`popgate_lock::MemoryLocks`] uses the same rule with the
//! process's clock, so fences also grow across restarts and across a switch
//! between the two backends (a store that keeps the newest fence it has
//! committed, such as the Maildir fence file, never sees them go back).
//!
//! # Holding
//!
//! A background task renews the lock every `ttl/3` with a compare-and-PEXPIRE
//! script, retrying every `ttl/10` after a failure. The lock is reported lost
//! (the [`LockGuard::lost`] watch turns true) when a renewal finds another
//! owner or no key, or when no renewal has succeeded for `ttl - ttl/5`
//! (measured from when the last successful renewal was *sent*, so the Redis
//! key is known to outlive that moment). [`LockGuard::verify`] checks the
//! local deadline and then runs the same compare-and-PEXPIRE: it succeeds only
//! if the key still holds our token, and it gives the commit a whole ttl.
//! Release is compare-and-DEL; a lock is never extended or deleted unless its
//! value is exactly our token.
//!
//! # Failures
//!
//! Every Redis call is bounded by `min(ttl/5, 2s)`; the client reconnects by
//! itself (redis's `ConnectionManager`, rebuilt by us if it stays broken;
//! behind Sentinel, looked up again through the sentinels).
//! While any lock is held a heartbeat refreshes a marker key of this
//! process (`{prefix}:{instance}:alive`) every [`HEARTBEAT`]; the first
//! call that succeeds after failed ones, and a marker found missing, make
//! every held lock re-verify at once: a Redis that restarted empty has handed out no lock
//! for more than a heartbeat and a round trip before its old holders
//! notice theirs are gone (instead of up to `ttl/3`, the next renewal).
//! Redis unreachable at login is [`LockError::Unavailable`]: never a session
//! without a lock.
//!
//! # Limits
//!
//! - One server, a Sentinel-watched master or a Redis Cluster
//!   ([`Endpoint`]); see the `endpoint` module for how each follows a
//!   failover.
//! - Redis 5 or later (scripts that call `TIME` and then write need
//!   effects replication, the default since 5.0), or Valkey.
//! - A failover or restart that loses the last writes can hand the mailbox
//!   to a second holder before the first one notices (within a heartbeat
//!   and a reconnect when its connection broke; at the next renewal, at
//!   most `ttl/3` later, when it did not, as after a Sentinel failover
//!   whose old master stays reachable).
//!   The fence still grows (the clock floor), so a store that checks fences
//!   refuses the older holder's commit once the newer one has committed.
//!   Redis's key expiry follows its wall clock: a forward clock step larger
//!   than the `ttl/5` margin can expire a lock early.
//! - Fleet-wide abuse limits (per-user sessions, per-IP connections, login
//!   penalties counted in Redis) are not here yet.

mod config;
mod connection;
mod endpoint;
mod guard;
mod scripts;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::RedisResult;
use async_trait::async_trait;
use tokio::time::Instant;

use popgate_lock::{LockError, LockGuard, MailboxLocks};

pub use config::{RedisLocksConfig, redact};
use connection::Connection;
pub(crate) use endpoint::Conn;
pub use endpoint::{Endpoint, SentinelEndpoint};
use guard::RedisGuard;
use scripts::{ACQUIRE, HEARTBEAT_MARK};

/// How long a mailbox's fence key lives after its last acquisition.
pub const FENCE_IDLE_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest ttl accepted: renewals and timeouts are fractions of it.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// While locks are held, the connection is exercised this often, so a
/// Redis that restarted (and may have lost every lock) is noticed within
/// it and every held lock is re-verified at once.
pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// Pause between attempts while waiting for a mailbox in use, and before
/// retrying a call that failed at the connection level.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Mailbox locks shared by every popgate process that uses the same Redis
/// and key prefix.
#[derive(Clone)]
pub struct RedisLocks {
    inner: Arc<Inner>,
}

/// What the locks and every guard they hand out share.
struct Inner {
    conn: Connection,
    ttl: Duration,
    margin: Duration,
    renew_every: Duration,
    retry_every: Duration,
    wait: Duration,
    prefix: String,
    instance: String,
    seq: AtomicU64,
    /// Guards alive (their renewal task or release still running).
    held: AtomicUsize,
}

impl RedisLocks {
    /// Prepares the client without connecting (the first login connects), so
    /// popgate starts while Redis is down and answers `[SYS/TEMP]` until it
    /// is back. Must be called inside a tokio runtime.
    pub fn new(config: &RedisLocksConfig) -> Result<Self, String> {
        config
            .validate()
            .map_err(|(field, e)| format!("{field}: {e}"))?;
        let conn = Connection::new(config)?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| format!("no randomness for the instance id: {e}"))?;
        let instance: String = id.iter().map(|b| format!("{b:02x}")).collect();
        tracing::info!(redis = %config.endpoint.describe(), instance = %instance, ttl_ms = config.ttl.as_millis() as u64, "redis mailbox locks");
        let locks = RedisLocks {
            inner: Arc::new(Inner {
                conn,
                ttl: config.ttl,
                margin: config.ttl / 5,
                renew_every: config.ttl / 3,
                retry_every: config.ttl / 10,
                wait: config.wait,
                prefix: config.key_prefix.clone(),
                instance,
                seq: AtomicU64::new(0),
                held: AtomicUsize::new(0),
            }),
        };
        tokio::spawn(heartbeat(Arc::downgrade(&locks.inner)));
        Ok(locks)
    }

    /// Runs one Redis call with the locks' timeouts, retries and reconnects
    /// (for the fleet-wide limits, which share this connection).
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, LockError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.inner.conn.run(what, call).await
    }

    /// The configured key prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// This process's random id, part of every lock token it writes.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The lock key of a mailbox (the store's `mailbox_key`).
    pub fn lock_key(&self, mailbox: &str) -> String {
        format!("{}:{{{mailbox}}}:lock", self.inner.prefix)
    }

    /// The fence key of a mailbox (the store's `mailbox_key`).
    pub fn fence_key(&self, mailbox: &str) -> String {
        format!("{}:{{{mailbox}}}:fence", self.inner.prefix)
    }

    async fn try_acquire(&self, mailbox: &str) -> Result<Option<Box<dyn LockGuard>>, LockError> {
        let inner = &self.inner;
        let owner = format!(
            "{}-{}",
            inner.instance,
            inner.seq.fetch_add(1, Ordering::Relaxed) + 1
        );
        let lock_key = self.lock_key(mailbox);
        let fence_key = self.fence_key(mailbox);
        let ttl_ms = inner.ttl.as_millis() as u64;
        let sent = Instant::now();
        let fence: Option<String> = inner
            .conn
            .run("acquire", |mut conn| {
                let (lock_key, fence_key, owner) =
                    (lock_key.clone(), fence_key.clone(), owner.clone());
                async move {
                    ACQUIRE
                        .key(lock_key)
                        .key(fence_key)
                        .arg(owner)
                        .arg(ttl_ms)
                        .arg(FENCE_IDLE_EXPIRY.as_millis() as u64)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        let Some(fence) = fence else {
            return Ok(None);
        };
        let fence_n: u64 = fence.parse().map_err(|_| {
            LockError::Unavailable(format!("acquire: Redis returned a bad fence {fence:?}"))
        })?;
        tracing::debug!(mailbox = %mailbox, fence = fence_n, owner = %owner, "lock acquired");
        let token = format!("{fence}:{owner}");
        Ok(Some(Box::new(RedisGuard::start(
            inner.clone(),
            mailbox,
            lock_key,
            token,
            fence_n,
            sent,
        ))))
    }
}

/// While any lock is held, a heartbeat every [`HEARTBEAT`] that refreshes
/// a marker key of this process: a connection that broke (Redis
/// restarted) is found out and remade within it, and the reconnect makes
/// every guard re-verify its lock (see `guard::keep`); a marker found
/// missing (Redis lost its data without this connection breaking, as a
/// failover to a replica that missed the last writes) does the same.
async fn heartbeat(inner: Weak<Inner>) {
    let mut marked = false;
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.held.load(Ordering::Relaxed) == 0 {
            marked = false;
            continue;
        }
        let key = format!("{}:{{{}}}:alive", inner.prefix, inner.instance);
        let expiry = inner.ttl.as_millis() as u64;
        // A failure is the guards' business (their renewals report it).
        let found: Result<i64, _> = inner
            .conn
            .run("heartbeat", |mut conn| {
                let key = key.clone();
                async move {
                    HEARTBEAT_MARK
                        .key(key)
                        .arg(expiry)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await;
        if let Ok(found) = found {
            if found == 0 && marked {
                tracing::info!(
                    "redis lost this process's heartbeat marker; checking every held lock"
                );
                inner.conn.recheck();
            }
            marked = true;
        }
    }
}

#[async_trait]
impl MailboxLocks for RedisLocks {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn acquire(&self, key: &str) -> Result<Box<dyn LockGuard>, LockError> {
        let started = Instant::now();
        loop {
            if let Some(guard) = self.try_acquire(key).await? {
                return Ok(guard);
            }
            let waited = started.elapsed();
            if waited >= self.inner.wait {
                return Err(LockError::InUse);
            }
            tokio::time::sleep(RETRY_PAUSE.min(self.inner.wait - waited)).await;
        }
    }

    async fn ping(&self) -> Result<(), LockError> {
        self.inner
            .conn
            .run("ping", |mut conn| async move {
                ::redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await
            .map(drop)
    }
}
