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
//! itself (redis's `ConnectionManager`, rebuilt by us if it stays broken).
//! Redis unreachable at login is [`LockError::Unavailable`]: never a session
//! without a lock.
//!
//! # Limits
//!
//! - One Redis endpoint (a standalone primary, or a proxy in front of
//!   more). The keys are Cluster-ready, but talking to a Redis Cluster
//!   directly needs redis's `cluster-async` client, not built here.
//! - Redis 5 or later (scripts that call `TIME` and then write need
//!   effects replication, the default since 5.0), or Valkey.
//! - A failover that loses the last writes can hand the mailbox to a second
//!   holder before the first one's renewal notices (at most `ttl/3` later).
//!   The fence still grows (the clock floor), so a store that checks fences
//!   refuses the older holder's commit once the newer one has committed.
//!   Redis's key expiry follows its wall clock: a forward clock step larger
//!   than the `ttl/5` margin can expire a lock early.
//! - Fleet-wide abuse limits (per-user sessions, per-IP connections, login
//!   penalties counted in Redis) are not here yet.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError, RedisResult, Script};
use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use popgate_lock::{LockError, LockGuard, MailboxLocks};

/// How long a mailbox's fence key lives after its last acquisition.
pub const FENCE_IDLE_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest ttl accepted: renewals and timeouts are fractions of it.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// Pause between attempts while waiting for a mailbox in use, and before
/// retrying a call that failed at the connection level.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The longest any single Redis call may take.
const MAX_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes the lock if it is free (or already ours: a retried call), and
/// returns the fence as a decimal string, or nil when the mailbox is in use.
/// KEYS: lock, fence. ARGV: owner, ttl ms, fence idle expiry ms.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if sep and string.sub(cur, sep + 1) == ARGV[1] then
    return string.sub(cur, 1, sep - 1)
  end
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('INCR', KEYS[2])
if f < now then
  f = now
  redis.call('SET', KEYS[2], string.format('%.0f', f))
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local fs = string.format('%.0f', f)
if not redis.call('SET', KEYS[1], fs .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return fs
",
    )
});

/// Extends the lock only if it is ours: 1, or 0. KEYS: lock. ARGV: token, ttl ms.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Deletes the lock only if it is ours: 1, or 0. KEYS: lock. ARGV: token.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// What a [`RedisLocks`] needs to know.
#[derive(Clone, Debug)]
pub struct RedisLocksConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS).
    pub url: String,
    /// How long a lock lives without renewal.
    pub ttl: Duration,
    /// The first part of every key: `{key_prefix}:{mailbox}:lock`.
    pub key_prefix: String,
    /// How long a login waits for a mailbox in use before `[IN-USE]`.
    pub wait: Duration,
    /// PEM CA certificates to trust for `rediss://` instead of the system's.
    pub tls_ca: Option<Vec<u8>>,
}

impl RedisLocksConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisLocksConfig {
            url: url.into(),
            ttl: Duration::from_secs(30),
            key_prefix: "popgate".into(),
            wait: Duration::ZERO,
            tls_ca: None,
        }
    }

    /// Checks the values without connecting. The error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.client().map_err(|e| ("url", e))?;
        if self.ttl < MIN_TTL {
            return Err(("ttl", format!("must be at least {}s", MIN_TTL.as_secs())));
        }
        if self.wait >= self.ttl {
            return Err(("wait", "must be shorter than ttl".into()));
        }
        let p = &self.key_prefix;
        if p.is_empty()
            || p.contains(|c: char| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            return Err((
                "key_prefix",
                "must be non-empty, without spaces or braces".into(),
            ));
        }
        Ok(())
    }

    fn client(&self) -> Result<Client, String> {
        let lower = self.url.to_ascii_lowercase();
        let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|s| lower.starts_with(s));
        if !scheme_ok {
            return Err(format!(
                "{}: use redis://host:port or rediss://host:port",
                redact(&self.url)
            ));
        }
        let client = match &self.tls_ca {
            None => Client::open(self.url.as_str()),
            Some(pem) => tls_client(&self.url, pem),
        };
        client.map_err(|e| format!("{}: {e}", redact(&self.url)))
    }

    fn op_timeout(&self) -> Duration {
        (self.ttl / 5).min(MAX_OP_TIMEOUT)
    }
}

fn tls_client(url: &str, pem: &[u8]) -> RedisResult<Client> {
    Client::build_with_tls(
        url,
        ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        },
    )
}

/// The URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end], user, &rest[at..])
        }
        None => url.to_string(),
    }
}

/// Mailbox locks shared by every popgate process that uses the same Redis
/// and key prefix.
#[derive(Clone)]
pub struct RedisLocks {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    manager_config: ConnectionManagerConfig,
    conn: Mutex<Managed>,
    ttl: Duration,
    margin: Duration,
    renew_every: Duration,
    retry_every: Duration,
    op_timeout: Duration,
    wait: Duration,
    prefix: String,
    instance: String,
    seq: AtomicU64,
}

/// The shared, self-reconnecting connection and how it has been doing.
struct Managed {
    manager: ConnectionManager,
    last_ok: Instant,
    failing_since: Option<Instant>,
    rebuilt: Instant,
}

impl RedisLocks {
    /// Prepares the client without connecting (the first login connects), so
    /// popgate starts while Redis is down and answers `[SYS/TEMP]` until it
    /// is back. Must be called inside a tokio runtime.
    pub fn new(config: &RedisLocksConfig) -> Result<Self, String> {
        config
            .validate()
            .map_err(|(field, e)| format!("{field}: {e}"))?;
        let client = config.client()?;
        let op_timeout = config.op_timeout();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                .map_err(|e| format!("{}: {e}", redact(&config.url)))?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| format!("no randomness for the instance id: {e}"))?;
        let instance: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        tracing::info!(url = %redact(&config.url), instance = %instance, ttl_ms = config.ttl.as_millis() as u64, "redis mailbox locks");
        Ok(RedisLocks {
            inner: Arc::new(Inner {
                client,
                manager_config,
                conn: Mutex::new(Managed {
                    manager,
                    last_ok: now,
                    failing_since: None,
                    rebuilt: now,
                }),
                ttl: config.ttl,
                margin: config.ttl / 5,
                renew_every: config.ttl / 3,
                retry_every: config.ttl / 10,
                op_timeout,
                wait: config.wait,
                prefix: config.key_prefix.clone(),
                instance,
                seq: AtomicU64::new(0),
            }),
        })
    }

    /// Runs one Redis call with the locks' timeouts, retries and reconnects
    /// (for the fleet-wide limits, which share this connection).
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, LockError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.inner.run(what, call).await
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
        let (lost_tx, _) = watch::channel(false);
        let shared = Arc::new(GuardShared {
            locks: inner.clone(),
            mailbox: mailbox.to_owned(),
            lock_key,
            token: format!("{fence}:{owner}"),
            fence: fence_n,
            lost_tx,
            last_ok: Mutex::new(sent),
        });
        tracing::debug!(mailbox = %mailbox, fence = fence_n, owner = %owner, "lock acquired");
        let keeper = tokio::spawn(keep(shared.clone()));
        Ok(Some(Box::new(RedisGuard {
            shared,
            keeper,
            released: false,
        })))
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
            .run("ping", |mut conn| async move {
                ::redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await
            .map(drop)
    }
}

impl Inner {
    fn manager(&self) -> ConnectionManager {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .manager
            .clone()
    }

    fn note_ok(&self) {
        let mut m = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        m.last_ok = Instant::now();
        m.failing_since = None;
    }

    /// A call failed at the connection level. The manager reconnects by
    /// itself; should it stay broken (it keeps a failed connection attempt
    /// that was not an I/O error, say), a fresh one replaces it.
    fn note_failure(&self) {
        let now = Instant::now();
        let mut m = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let since = *m.failing_since.get_or_insert(now);
        let stuck = self.op_timeout.max(Duration::from_secs(1));
        if now - since >= stuck && now - m.rebuilt >= stuck {
            match ConnectionManager::new_lazy_with_config(
                self.client.clone(),
                self.manager_config.clone(),
            ) {
                Ok(fresh) => {
                    tracing::info!(
                        "redis lock connection failing since {:?}, starting afresh",
                        now - since
                    );
                    m.manager = fresh;
                    m.rebuilt = now;
                }
                Err(e) => tracing::warn!(error = %e, "cannot recreate the redis lock connection"),
            }
        }
    }

    /// Runs one Redis call within the operation timeout, retrying calls that
    /// failed at the connection level while time remains. Every call given
    /// here is safe to repeat.
    async fn run<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, LockError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.op_timeout;
        loop {
            let result = tokio::time::timeout_at(deadline, call(self.manager())).await;
            let error = match result {
                Ok(Ok(value)) => {
                    self.note_ok();
                    return Ok(value);
                }
                Ok(Err(e)) if is_server_reply(&e) => {
                    // Redis answered: reachable, but refused (a script error,
                    // LOADING after a restart, READONLY on a replica).
                    self.note_ok();
                    e.to_string()
                }
                Ok(Err(e)) => {
                    self.note_failure();
                    e.to_string()
                }
                Err(_) => {
                    self.note_failure();
                    format!("no answer within {:?}", self.op_timeout)
                }
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(LockError::Unavailable(format!("redis {what}: {error}")));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

fn is_server_reply(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(_))
}

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
            .run("release", |mut conn| {
                let (key, token) = (self.lock_key.clone(), self.token.clone());
                async move { RELEASE.key(key).arg(token).invoke_async(&mut conn).await }
            })
            .await?;
        Ok(n == 1)
    }
}

/// The renewal task: runs until the lock is lost or the guard stops it.
async fn keep(shared: Arc<GuardShared>) {
    let locks = shared.locks.clone();
    let mut next = Instant::now() + locks.renew_every;
    loop {
        let deadline = shared.deadline();
        tokio::time::sleep_until(next.min(deadline)).await;
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

struct RedisGuard {
    shared: Arc<GuardShared>,
    keeper: JoinHandle<()>,
    released: bool,
}

#[async_trait]
impl LockGuard for RedisGuard {
    fn fence(&self) -> u64 {
        self.shared.fence
    }

    fn lost(&self) -> watch::Receiver<bool> {
        self.shared.lost_tx.subscribe()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("rediss://user:pw@h/1"), "rediss://user:***@h/1");
    }

    #[test]
    fn validation_names_the_field() {
        let ok = RedisLocksConfig::new("redis://127.0.0.1:6379");
        ok.validate().unwrap();
        let mut c = ok.clone();
        c.url = "http://x".into();
        assert_eq!(c.validate().unwrap_err().0, "url");
        let mut c = ok.clone();
        c.ttl = Duration::from_millis(500);
        assert_eq!(c.validate().unwrap_err().0, "ttl");
        let mut c = ok.clone();
        c.wait = c.ttl;
        assert_eq!(c.validate().unwrap_err().0, "wait");
        let mut c = ok;
        c.key_prefix = "a{b".into();
        assert_eq!(c.validate().unwrap_err().0, "key_prefix");
    }
}
