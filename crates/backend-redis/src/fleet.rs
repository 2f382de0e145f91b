//! The fleet's live sessions in Redis, for `popgate who` and `popgate kick`
//! across replicas, on the locks' connection.
//!
//! # Keys
//!
//! All under the lock prefix and one hash tag, `{fleet}`, so they share a
//! Redis Cluster slot and one script may touch several:
//!
//! - `{prefix}:{fleet}:replicas`: a sorted set of the replicas that have
//!   published, scored by when their listing expires (ms, Redis's clock).
//! - `{prefix}:{fleet}:sessions:{replica}`: a hash per replica, session id
//!   to the session's record (opaque here: JSON written by the binary),
//!   rewritten whole on every publication and expiring with the listing,
//!   so a replica that dies drops out of `who` within the listing's ttl,
//!   as its locks expire.
//! - `{prefix}:{fleet}:kick:{replica}`: a list of session ids a replica is
//!   asked to end; it takes and clears it on every poll.
//!
//! The records are opaque strings: this crate knows nothing of sessions.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;

use popgate_lock::LockError;

use crate::RedisLocks;

/// How long an unanswered kick request waits for its replica.
const KICK_EXPIRY: Duration = Duration::from_secs(60);

/// Replaces a replica's listing and marks it alive until now + ttl.
/// KEYS: replicas, sessions hash. ARGV: replica, ttl ms, then id, record pairs.
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
if #ARGV > 2 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
",
    )
});

/// The replicas whose listing has not expired. KEYS: replicas.
static LIVE_REPLICAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
",
    )
});

/// Queues kick requests for a replica. KEYS: its kick list. ARGV: expiry
/// ms, then the session ids.
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 2, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
",
    )
});

/// Takes and clears a replica's kick requests. KEYS: the kick list. A
/// retried call whose first answer was lost loses those requests: a kick
/// is asked again by the operator, never acted on twice.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
if #ids > 0 then
  redis.call('DEL', KEYS[1])
end
return ids
",
    )
});

/// One replica's view of the fleet's session listings.
#[derive(Clone)]
pub struct RedisFleet {
    locks: RedisLocks,
    replica: String,
    ttl: Duration,
}

impl RedisFleet {
    /// `replica` names this process (no `:`, `{` or `}`); its listing
    /// lives `ttl` after each publication.
    pub fn new(locks: &RedisLocks, replica: &str, ttl: Duration) -> Self {
        RedisFleet {
            locks: locks.clone(),
            replica: replica.to_owned(),
            ttl,
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{}:{{fleet}}:{what}", self.locks.prefix())
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Replaces this replica's listing with `records` (session id, record).
    pub async fn publish(&self, records: &[(String, String)]) -> Result<(), LockError> {
        let (replicas, sessions) = (
            self.key("replicas"),
            self.key(&format!("sessions:{}", self.replica)),
        );
        let ttl_ms = self.ttl.as_millis() as u64;
        self.locks
            .call("publish sessions", |mut conn| {
                let mut inv = PUBLISH.key(&replicas);
                inv.key(&sessions).arg(&self.replica).arg(ttl_ms);
                for (id, record) in records {
                    inv.arg(id).arg(record);
                }
                async move { inv.invoke_async::<i64>(&mut conn).await }
            })
            .await
            .map(drop)
    }

    /// Every live replica's listing: (replica, its records), this one's too.
    pub async fn listings(&self) -> Result<Vec<(String, Vec<String>)>, LockError> {
        let key = self.key("replicas");
        let replicas: Vec<String> = self
            .locks
            .call("list replicas", |mut conn| {
                let key = key.clone();
                async move { LIVE_REPLICAS.key(key).invoke_async(&mut conn).await }
            })
            .await?;
        let mut out = Vec::with_capacity(replicas.len());
        for replica in replicas {
            let key = self.key(&format!("sessions:{replica}"));
            let records: Vec<String> = self
                .locks
                .call("list sessions", |mut conn| {
                    let key = key.clone();
                    async move { ::redis::cmd("HVALS").arg(key).query_async(&mut conn).await }
                })
                .await?;
            out.push((replica, records));
        }
        Ok(out)
    }

    /// Asks `replica` to end the sessions with these ids.
    pub async fn request_kick(&self, replica: &str, ids: &[String]) -> Result<(), LockError> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = self.key(&format!("kick:{replica}"));
        let expiry = KICK_EXPIRY.as_millis() as u64;
        // A retried push only repeats ids, which the replica ignores once
        // the session is gone.
        self.locks
            .call("request kick", |mut conn| {
                let mut inv = PUSH.key(&key);
                inv.arg(expiry);
                for id in ids {
                    inv.arg(id);
                }
                async move { inv.invoke_async::<i64>(&mut conn).await }
            })
            .await
            .map(drop)
    }

    /// Takes the ids of the sessions this replica has been asked to end.
    pub async fn take_kicks(&self) -> Result<Vec<String>, LockError> {
        let key = self.key(&format!("kick:{}", self.replica));
        self.locks
            .call("take kicks", |mut conn| {
                let key = key.clone();
                async move { TAKE.key(key).invoke_async(&mut conn).await }
            })
            .await
    }
}
