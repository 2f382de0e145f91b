//! Fleet-wide abuse limits in Redis: the per-prefix connection cap and the
//! login attempt counts hold across every replica that shares the Redis.
//! What is counted, and why, is in [`popgate_lock::limits`]; clients are counted by
//! their [`ClientNet`] (`192.0.2.7`, `2001:db8:1:2::/64`).
//!
//! - Connections from one prefix: a sorted set `{prefix}:conn:{net}` whose
//!   members are this replica's live connections, scored by a lease expiry
//!   (Redis `TIME` + 60 s). Each replica renews its members every 20 s and
//!   removes them on disconnect; a crashed replica's members lapse within a
//!   lease, so its counts do not stick.
//! - Login attempts: counters `{prefix}:{limits}:fail:ip:{net}`,
//!   `{prefix}:{limits}:fail:acct:{hex}` and `{prefix}:{limits}:fail:pair:{hex}`,
//!   and the known-good mark `{prefix}:{limits}:good:{hex}`, where `{hex}` is
//!   the 32 hex digits of an [`AccountId`] or [`PairId`] (SHA-256 of the name):
//!   no name a client sends is ever part of a key, and every key has a fixed
//!   length. One Lua script counts an attempt in on all of them at once and
//!   returns the prior counts; another ends it (see [`popgate_lock::limits`]). The
//!   counters expire one penalty window after their last attempt, the marks
//!   after `known_good_for`. So the keys alive at once are at most three per
//!   login attempt of the last window (whose rate the penalty bounds: about
//!   `max_connections_per_ip / penalty_max` per prefix under attack) plus one
//!   per (account, prefix) that logged in successfully within
//!   `known_good_for`. A name that is no login of a tenant touches only the
//!   prefix counter. The scripts' keys share the hash tag `{limits}`, so on
//!   a Redis Cluster they would all land in one slot.
//! - A call retried after a lost answer may count an attempt twice: in the
//!   safe direction.
//!
//! The process-wide connection cap stays local (it guards this process's
//! resources). When Redis cannot be reached, the limits fall back to this
//! process's own counts rather than refusing service: abuse counters are
//! best effort, unlike mailbox locks. Every attempt is also counted in this
//! process, so the fallback starts from recent history.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use ::redis::Script;

use crate::RedisLocks;
use popgate_lock::limits::{
    AccountId, Attempt, ClientNet, ConnectionPermit, Limits, LimitsConfig, MemoryLimits, PairId,
    Prior, Rejected, Verdict,
};

/// How long a connection's entry lives without renewal.
const LEASE: Duration = Duration::from_secs(60);

static CONNECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"#,
    )
});

static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"#,
    )
});

/// Counts a login attempt in and returns the counts from before it.
/// KEYS: prefix counter [, account counter, pair counter, pair's known-good
/// mark]. ARGV: window ms. Returns {prefix, account, pair, known good 0/1}.
static ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function bump(key)
  local n = redis.call('INCR', key)
  redis.call('PEXPIRE', key, tonumber(ARGV[1]))
  return n - 1
end
local net = bump(KEYS[1])
if #KEYS == 1 then
  return {net, 0, 0, 0}
end
return {net, bump(KEYS[2]), bump(KEYS[3]), redis.call('EXISTS', KEYS[4])}
"#,
    )
});

/// Ends an attempt that was not a failure: takes its pre-counts back, and
/// on success clears the pair's record and marks the pair known good.
/// KEYS: as for ATTEMPT. ARGV: `success` or `unchecked`, known-good ttl ms.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function undo(key)
  local n = tonumber(redis.call('GET', key)) or 0
  if n > 1 then
    redis.call('DECR', key)
  elseif n == 1 then
    redis.call('DEL', key)
  end
end
undo(KEYS[1])
if #KEYS == 1 then
  return 1
end
undo(KEYS[2])
if ARGV[1] == 'success' then
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[4], '1', 'PX', tonumber(ARGV[2]))
else
  undo(KEYS[3])
end
return 1
"#,
    )
});

pub struct RedisLimits {
    locks: RedisLocks,
    local: Arc<MemoryLimits>,
    /// This replica's live connection entries: member → sorted-set key.
    live: Arc<Mutex<HashMap<String, String>>>,
    seq: AtomicU64,
}

impl RedisLimits {
    /// Shares the connection of `locks`. Starts the lease renewal task, so it
    /// must be called inside a tokio runtime.
    pub fn new(locks: &RedisLocks, config: LimitsConfig) -> Arc<Self> {
        let limits = Arc::new(RedisLimits {
            locks: locks.clone(),
            local: MemoryLimits::new(config),
            live: Arc::default(),
            seq: AtomicU64::new(0),
        });
        tokio::spawn(renew_leases(Arc::downgrade(&limits)));
        limits
    }

    fn conn_key(&self, net: &ClientNet) -> String {
        format!("{}:conn:{{{net}}}", self.locks.prefix())
    }

    fn net_key(&self, net: &ClientNet) -> String {
        format!("{}:{{limits}}:fail:ip:{net}", self.locks.prefix())
    }

    fn account_key(&self, account: &AccountId) -> String {
        format!(
            "{}:{{limits}}:fail:acct:{}",
            self.locks.prefix(),
            account.hex()
        )
    }

    fn pair_key(&self, pair: &PairId) -> String {
        format!(
            "{}:{{limits}}:fail:pair:{}",
            self.locks.prefix(),
            pair.hex()
        )
    }

    fn good_key(&self, pair: &PairId) -> String {
        format!("{}:{{limits}}:good:{}", self.locks.prefix(), pair.hex())
    }

    /// The keys of an attempt's scripts: the prefix counter, and with an
    /// account its counter, the pair's counter and the pair's mark.
    fn attempt_keys(&self, attempt: &Attempt) -> Vec<String> {
        let net = attempt.net();
        let mut keys = vec![self.net_key(&net)];
        if let Some(account) = attempt.account() {
            let pair = account.pair(&net);
            keys.push(self.account_key(&account));
            keys.push(self.pair_key(&pair));
            keys.push(self.good_key(&pair));
        }
        keys
    }
}

/// A connection counted in Redis: removed from the set when dropped.
struct Lease {
    locks: RedisLocks,
    live: Arc<Mutex<HashMap<String, String>>>,
    member: String,
    key: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.member);
        let (locks, key, member) = (
            self.locks.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.member),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let r = locks
                    .call("ZREM", |mut conn| {
                        let (key, member) = (key.clone(), member.clone());
                        async move {
                            ::redis::cmd("ZREM")
                                .arg(&key)
                                .arg(&member)
                                .query_async::<i64>(&mut conn)
                                .await
                        }
                    })
                    .await;
                if let Err(e) = r {
                    // The lease lapses by itself within a minute.
                    tracing::debug!(error = %e, "cannot remove a connection entry");
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl Limits for RedisLimits {
    fn config(&self) -> Arc<LimitsConfig> {
        self.local.current()
    }

    fn reconfigure(&self, config: LimitsConfig) {
        self.local.reconfigure(config)
    }

    async fn connect(&self, ip: IpAddr) -> Result<ConnectionPermit, Rejected> {
        let process = self.local.connect_local(ip, false)?;
        let key = self.conn_key(&self.local_config().net(ip));
        let member = format!(
            "{}:{}",
            self.locks.instance(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let cap = self.local_config().max_connections_per_ip;
        let admitted = self
            .locks
            .call("connection cap", |mut conn| {
                let (key, member) = (key.clone(), member.clone());
                async move {
                    CONNECT
                        .key(&key)
                        .arg(cap)
                        .arg(&member)
                        .arg(LEASE.as_millis() as u64)
                        .invoke_async::<i64>(&mut conn)
                        .await
                }
            })
            .await;
        match admitted {
            Ok(1) => {
                self.live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(member.clone(), key.clone());
                let lease = Lease {
                    locks: self.locks.clone(),
                    live: self.live.clone(),
                    member,
                    key,
                };
                Ok(ConnectionPermit::new((process, lease)))
            }
            Ok(_) => Err(Rejected::PerIp),
            Err(e) => {
                tracing::warn!(error = %e, "fleet connection count unavailable; counting in this process");
                drop(process);
                self.local.connect_local(ip, true)
            }
        }
    }

    async fn attempt(&self, ip: IpAddr, account: Option<&str>) -> Attempt {
        let mut attempt = self.local.local_attempt(ip, account);
        let keys = self.attempt_keys(&attempt);
        let window = self.local_config().penalty_window.as_millis() as u64;
        let counted = self
            .locks
            .call("login attempt", |mut conn| {
                let keys = keys.clone();
                async move {
                    let mut inv = ATTEMPT.prepare_invoke();
                    for k in &keys {
                        inv.key(k);
                    }
                    inv.arg(window).invoke_async::<Vec<i64>>(&mut conn).await
                }
            })
            .await;
        match counted {
            Ok(v) if v.len() == 4 => {
                let n = |x: i64| u32::try_from(x.max(0)).unwrap_or(u32::MAX);
                let prior = Prior {
                    net: n(v[0]),
                    account: n(v[1]),
                    pair: n(v[2]),
                    known_good: v[3] == 1,
                };
                let since = self.local.started_since(&attempt);
                attempt.counted_remotely(&self.local_config(), prior, since);
            }
            Ok(v) => {
                tracing::warn!(reply = ?v, "unexpected reply counting a login attempt in redis; counting in this process");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot count a login attempt in redis; counting in this process");
            }
        }
        attempt
    }

    async fn settle(&self, attempt: &Attempt) -> Duration {
        // This process's failures and the fleet's other counts: the
        // attempts ahead here are waited for, those on other replicas
        // count as failures.
        self.local.local_settle(attempt).await
    }

    async fn finish(&self, mut attempt: Attempt, verdict: Verdict) {
        self.local.local_finish(&mut attempt, verdict);
        // A failure keeps its pre-counts: nothing to write.
        if !attempt.remote || verdict == Verdict::Failure {
            return;
        }
        let keys = self.attempt_keys(&attempt);
        let mode = if verdict == Verdict::Success {
            "success"
        } else {
            "unchecked"
        };
        let good_ms = self.local_config().known_good_for.as_millis() as u64;
        let r = self
            .locks
            .call("login attempt end", |mut conn| {
                let keys = keys.clone();
                async move {
                    let mut inv = FINISH.prepare_invoke();
                    for k in &keys {
                        inv.key(k);
                    }
                    inv.arg(mode)
                        .arg(good_ms)
                        .invoke_async::<i64>(&mut conn)
                        .await
                }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot record the end of a login attempt in redis");
        }
    }
}

impl RedisLimits {
    fn local_config(&self) -> Arc<LimitsConfig> {
        self.local.current()
    }
}

/// Renews this replica's connection entries every third of a lease, until
/// the limits are dropped.
async fn renew_leases(limits: Weak<RedisLimits>) {
    let mut tick = tokio::time::interval(LEASE / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(limits) = limits.upgrade() else {
            return;
        };
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for (member, key) in limits.live.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            by_key.entry(key.clone()).or_default().push(member.clone());
        }
        for (key, members) in by_key {
            let r = limits
                .locks
                .call("lease renewal", |mut conn| {
                    let (key, members) = (key.clone(), members.clone());
                    async move {
                        let mut inv = RENEW.key(&key);
                        inv.arg(LEASE.as_millis() as u64);
                        for m in &members {
                            inv.arg(m);
                        }
                        inv.invoke_async::<i64>(&mut conn).await
                    }
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot renew connection entries in redis");
            }
        }
    }
}
