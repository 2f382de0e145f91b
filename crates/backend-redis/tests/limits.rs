//! The fleet-wide abuse limits against the real Redis at `POPGATE_TEST_REDIS`
//! (default `redis://127.0.0.1:6379`), each test under its own key prefix.
//! Two `RedisLimits` on one prefix stand for two popgate processes.
//!
//! Without a reachable Redis the tests say so and pass, unless
//! `POPGATE_REQUIRE_REDIS=1` (the project's test script sets it), where they
//! fail.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use backend_redis::{RedisLimits, RedisLocks, RedisLocksConfig};
use popgate_lock::limits::{Limits, LimitsConfig, Verdict};
use redis::AsyncCommands;

mod common;

use common::{required, shared_url};

/// A test's view of the shared Redis: two "processes" on one fresh prefix,
/// and a raw connection to look at the keys.
struct Fleet {
    a: Arc<RedisLimits>,
    b: Arc<RedisLimits>,
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
}

impl Fleet {
    async fn new(config: LimitsConfig) -> Option<Fleet> {
        let url = shared_url();
        let conn = common::connect(&url).await;
        let Some(conn) = conn else {
            assert!(
                !required(),
                "POPGATE_REQUIRE_REDIS=1 but no Redis answers at {url}"
            );
            eprintln!("skipped: no Redis answers at {url}");
            return None;
        };
        let prefix = common::unique_prefix("popgate-test");
        let mut c = RedisLocksConfig::new(url);
        c.key_prefix = prefix.clone();
        let a = RedisLimits::new(&RedisLocks::new(&c).unwrap(), config.clone());
        let b = RedisLimits::new(&RedisLocks::new(&c).unwrap(), config);
        Some(Fleet { a, b, conn, prefix })
    }

    async fn keys(&mut self) -> Vec<String> {
        let mut keys: Vec<String> = self.conn.keys(format!("{}:*", self.prefix)).await.unwrap();
        keys.sort();
        keys
    }

    async fn clean(mut self) {
        for k in self.keys().await {
            let _: () = self.conn.del(&k).await.unwrap();
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const S: fn(u64) -> Duration = Duration::from_secs;

async fn fail(l: &Arc<RedisLimits>, from: &str, account: Option<&str>) -> Duration {
    let a = l.attempt(ip(from), account).await;
    let p = a.penalty;
    l.finish(a, Verdict::Failure).await;
    p
}

async fn succeed(l: &Arc<RedisLimits>, from: &str, account: &str) -> Duration {
    let a = l.attempt(ip(from), Some(account)).await;
    let p = a.penalty;
    l.finish(a, Verdict::Success).await;
    p
}

/// The penalty the next attempt would pay, without counting it.
async fn peek(l: &Arc<RedisLimits>, from: &str, account: Option<&str>) -> Duration {
    let a = l.attempt(ip(from), account).await;
    let p = a.penalty;
    l.finish(a, Verdict::Unchecked).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_attempts_each_pay() {
    let Some(f) = Fleet::new(LimitsConfig::default()).await else {
        return;
    };
    // Eight attempts at once over two processes: all counted in before any
    // is checked, so each sees the others.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let l = if i % 2 == 0 { f.a.clone() } else { f.b.clone() };
        tasks.push(tokio::spawn(async move {
            l.attempt(ip("203.0.113.5"), Some("victim@a")).await
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.push(t.await.unwrap());
    }
    let mut secs: Vec<u64> = held.iter().map(|a| a.penalty.as_secs()).collect();
    secs.sort();
    assert_eq!(secs, [0, 2, 4, 8, 15, 15, 15, 15]);
    // Against the same account from elsewhere, and from the same address
    // against another account: slowed as well.
    assert_eq!(peek(&f.a, "203.0.114.5", Some("victim@a")).await, S(15));
    assert_eq!(peek(&f.b, "203.0.113.5", Some("x@a")).await, S(15));
    for a in held {
        f.a.finish(a, Verdict::Failure).await;
    }
    f.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ipv6_64_is_one_sorted_set_of_connections() {
    // The caps themselves are the conformance kit's (tests/conformance.rs);
    // this is how they are kept in Redis.
    let Some(mut f) = Fleet::new(LimitsConfig {
        max_connections_per_ip: 2,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let c1 = f.a.connect(ip("2001:db8:0:1::1")).await.unwrap();
    let c2 = f.b.connect(ip("2001:db8:0:1:ffff::2")).await.unwrap();
    let key = format!("{}:conn:{{2001:db8:0:1::/64}}", f.prefix);
    let members: i64 = f.conn.zcard(&key).await.unwrap();
    assert_eq!(members, 2);
    drop((c1, c2));
    assert!(
        async {
            for _ in 0..100 {
                let n: i64 = f.conn.zcard(&key).await.unwrap();
                if n == 0 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
        .await,
        "dropped connections leave the sorted set"
    );
    f.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_fixed_length_hashes_with_the_window_as_expiry() {
    let Some(mut f) = Fleet::new(LimitsConfig::default()).await else {
        return;
    };
    let long = format!("{}@acme.example", "A".repeat(1000));
    fail(&f.a, "192.0.2.1", Some(&long)).await;
    succeed(&f.a, "192.0.2.1", "bob@acme.example").await;
    // Names that are no login: only the address is counted.
    for _ in 0..200 {
        fail(&f.a, "192.0.2.1", None).await;
    }
    let keys = f.keys().await;
    let hex32 = |k: &str| {
        let h = k.rsplit(':').next().unwrap();
        h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let p = &f.prefix;
    let names: Vec<&str> = keys.iter().map(|k| &k[p.len() + 1..]).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"{limits}:fail:ip:192.0.2.1"), "{names:?}");
    for k in &keys {
        assert!(!k.contains("AAAA"), "a name in a key: {k}");
        assert!(!k.contains("bob"), "a name in a key: {k}");
        if !k.ends_with(":192.0.2.1") {
            assert!(hex32(k), "{k}");
        }
        let pttl: i64 = f.conn.pttl(k).await.unwrap();
        if k.contains(":good:") {
            assert!(pttl > 29 * 24 * 3600 * 1000, "{k}: {pttl}");
        } else {
            assert!(pttl > 0 && pttl <= 15 * 60 * 1000, "{k}: {pttl}");
        }
    }
    // The address, the long name's account and pair, and bob's mark (his
    // account counter went back to 0 and is gone, and so is his pair's).
    assert_eq!(
        names.iter().filter(|k| k.contains(":fail:acct:")).count(),
        1
    );
    assert_eq!(
        names.iter().filter(|k| k.contains(":fail:pair:")).count(),
        1
    );
    assert_eq!(names.iter().filter(|k| k.contains(":good:")).count(), 1);
    f.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_process_counts() {
    let mut c = RedisLocksConfig::new("redis://127.0.0.1:1");
    c.ttl = Duration::from_secs(1);
    let l = RedisLimits::new(&RedisLocks::new(&c).unwrap(), LimitsConfig::default());
    assert_eq!(fail(&l, "192.0.2.1", Some("bob@a")).await, Duration::ZERO);
    assert_eq!(fail(&l, "192.0.2.1", Some("bob@a")).await, S(2));
    assert_eq!(succeed(&l, "192.0.2.1", "mallory@a").await, S(4));
    assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, S(4));
}
