//! Fleet-wide abuse limits in Redis: the per-IP connection cap and the
//! failed-login penalty hold across every replica that shares the Redis.
//!
//! - Connections from one address: a sorted set `{prefix}:conn:{ip}` whose
//!   members are this replica's live connections, scored by a lease expiry
//!   (Redis `TIME` + 60 s). Each replica renews its members every 20 s and
//!   removes them on disconnect; a crashed replica's members lapse within a
//!   lease, so its counts do not stick.
//! - Failures: counters `{prefix}:fail:ip:{ip}` and `{prefix}:fail:user:{login}`
//!   with the penalty window as expiry; a success deletes both.
//!
//! The process-wide connection cap stays local (it guards this process's
//! resources). When Redis cannot be reached, the limits fall back to this
//! process's own counts rather than refusing service: abuse counters are
//! best effort, unlike mailbox locks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use ::redis::Script;

use crate::RedisLocks;
use crate::limits::{
    ConnectionPermit, Limits, LimitsConfig, MemoryLimits, Rejected, account_key, canonical_ip,
    ip_key,
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

static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return n
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

    fn conn_key(&self, ip: IpAddr) -> String {
        format!("{}:conn:{{{}}}", self.locks.prefix(), canonical_ip(ip))
    }

    fn fail_key(&self, key: &str) -> String {
        format!("{}:fail:{{{key}}}", self.locks.prefix())
    }

    async fn failures(&self, key: String) -> Result<u32, crate::LockError> {
        self.locks
            .call("GET", |mut conn| {
                let key = key.clone();
                async move {
                    ::redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<u32>>(&mut conn)
                        .await
                }
            })
            .await
            .map(|n| n.unwrap_or(0))
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
impl Limits for Arc<RedisLimits> {
    fn config(&self) -> &LimitsConfig {
        Limits::config(&self.local)
    }

    async fn connect(&self, ip: IpAddr) -> Result<ConnectionPermit, Rejected> {
        let process = self.local.connect_local(ip, false)?;
        let key = self.conn_key(ip);
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

    async fn penalty(&self, ip: IpAddr, account: &str) -> Duration {
        let by_ip = self.failures(self.fail_key(&ip_key(ip))).await;
        let by_account = self.failures(self.fail_key(&account_key(account))).await;
        match (by_ip, by_account) {
            (Ok(a), Ok(b)) => self.local_config().penalty_for(a.max(b)),
            _ => self.local.local_penalty(ip, account),
        }
    }

    async fn failed(&self, ip: IpAddr, account: &str) {
        self.local.local_failed(ip, account);
        let window = self.local_config().penalty_window.as_millis() as u64;
        for key in [
            self.fail_key(&ip_key(ip)),
            self.fail_key(&account_key(account)),
        ] {
            let r = self
                .locks
                .call("failure count", |mut conn| {
                    let key = key.clone();
                    async move {
                        FAIL.key(&key)
                            .arg(window)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    }
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot count a failed login in redis");
            }
        }
    }

    async fn succeeded(&self, ip: IpAddr, account: &str) {
        self.local.local_succeeded(ip, account);
        for key in [
            self.fail_key(&ip_key(ip)),
            self.fail_key(&account_key(account)),
        ] {
            let r = self
                .locks
                .call("DEL", |mut conn| {
                    let key = key.clone();
                    async move {
                        ::redis::cmd("DEL")
                            .arg(&key)
                            .query_async::<i64>(&mut conn)
                            .await
                    }
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot clear failed logins in redis");
            }
        }
    }
}

impl RedisLimits {
    fn local_config(&self) -> &LimitsConfig {
        Limits::config(&self.local)
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
