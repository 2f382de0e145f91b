//! Mailbox locks across a Redis failover: Sentinel and Cluster, with real
//! servers on loopback, the master killed mid-run.
//!
//! What a user would notice, and what these tests hold the locks to:
//! - logins resume by themselves after the failover, within a stated bound;
//! - a session that held a lock either keeps it (the new master has its key,
//!   and nobody else can take the mailbox) or is told it lost it (`lost()`):
//!   never two holders that both believe they hold it;
//! - fences handed out after the failover are larger than every fence
//!   handed out before it.

#[path = "failover/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use backend_redis::{RedisFleet, RedisLimits, RedisLocks, RedisLocksConfig};
use popgate_lock::limits::{Limits, LimitsConfig};
use popgate_lock::{LockError, MailboxLocks};
use servers::{Cluster, SentinelSet, have_redis};

fn required() -> bool {
    std::env::var("POPGATE_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

/// True when the test can run; otherwise says why (and fails under
/// POPGATE_REQUIRE_REDIS=1, as scripts/test sets).
fn can_run() -> bool {
    if have_redis() {
        return true;
    }
    assert!(
        !required(),
        "POPGATE_REQUIRE_REDIS=1 but redis-server, redis-sentinel or redis-cli is missing"
    );
    eprintln!("skipped: redis-server, redis-sentinel or redis-cli is missing");
    false
}

/// How long logins may fail after the master dies: the sentinels' (or the
/// cluster's) one-second down-after time, their election and promotion,
/// and our re-resolution. README, "Redis Sentinel and Cluster", states the
/// bound for the defaults; the test servers use a one-second detection.
const RESUME_BOUND: Duration = Duration::from_secs(15);

/// Tries `acquire` until it works; returns how long that took.
async fn until_acquired(
    locks: &RedisLocks,
    mailbox: &str,
) -> (Duration, Box<dyn popgate_lock::LockGuard>) {
    let started = Instant::now();
    loop {
        match locks.acquire(mailbox).await {
            Ok(g) => return (started.elapsed(), g),
            Err(LockError::InUse) => panic!("{mailbox} in use after the failover"),
            Err(LockError::Unavailable(why)) => {
                assert!(
                    started.elapsed() < RESUME_BOUND,
                    "logins did not resume within {RESUME_BOUND:?}: {why}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_resumes_logins_and_fences_keep_growing() {
    if !can_run() {
        return;
    }
    let mut set = SentinelSet::start();
    let old_master = set.master.port;
    let config = || {
        let mut c = RedisLocksConfig::sentinel(set.sentinel_urls(), servers::MASTER_NAME);
        c.ttl = Duration::from_secs(3);
        c.key_prefix = "failover".into();
        c
    };
    let a = RedisLocks::new(&config()).unwrap();
    let b = RedisLocks::new(&config()).unwrap();
    a.ping().await.unwrap();

    // Fences before the failover; one mailbox stays held across it.
    let mut highest = 0;
    for _ in 0..20 {
        let g = a.acquire("t/fenced").await.unwrap();
        highest = highest.max(g.fence());
        g.release().await;
    }
    let held = a.acquire("t/held").await.unwrap();
    highest = highest.max(held.fence());
    assert!(matches!(b.acquire("t/held").await, Err(LockError::InUse)));
    // Let the replica have the writes (asynchronous replication).
    servers::cli(old_master, &["wait", "1", "2000"]);

    set.master.kill();
    let killed = Instant::now();
    let (waited, g) = until_acquired(&b, "t/fenced").await;
    eprintln!(
        "logins resumed {:?} after the master was killed ({waited:?} of them failing)",
        killed.elapsed()
    );
    assert_ne!(
        set.master_port(),
        Some(old_master),
        "the sentinels promoted the replica"
    );
    assert_eq!(set.master_port(), Some(set.replica.port));
    assert!(
        g.fence() > highest,
        "fence after the failover {} <= {highest} before it",
        g.fence()
    );
    g.release().await;

    // The held lock: kept (its key was replicated), and then nobody else may
    // take the mailbox; or lost, and then the owner was told.
    tokio::time::sleep(Duration::from_secs(2)).await;
    match held.verify().await {
        Ok(()) => {
            assert!(!*held.lost().borrow());
            assert!(
                matches!(b.acquire("t/held").await, Err(LockError::InUse)),
                "a lock kept across the failover is still exclusive"
            );
            let fence = held.fence();
            held.release().await;
            let again = b.acquire("t/held").await.unwrap();
            assert!(again.fence() > fence);
            again.release().await;
        }
        Err(_) => {
            assert!(
                *held.lost().borrow(),
                "verify failed but lost() never fired"
            );
            let again = b.acquire("t/held").await.unwrap();
            assert!(again.fence() > highest);
            again.release().await;
        }
    }

    // New sessions keep working on the new master, from both instances.
    for locks in [&a, &b] {
        let g = locks.acquire("t/after").await.unwrap();
        g.release().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_set_that_names_an_unknown_master_is_unavailable() {
    if !can_run() {
        return;
    }
    let set = SentinelSet::start();
    let mut c = RedisLocksConfig::sentinel(set.sentinel_urls(), "no-such-master");
    c.ttl = Duration::from_secs(3);
    let locks = RedisLocks::new(&c).unwrap();
    match locks.acquire("t/x").await {
        Err(LockError::Unavailable(why)) => assert!(why.contains("no-such-master"), "{why}"),
        other => panic!("expected Unavailable, got {:?}", other.map(|g| g.fence())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_logins_resume_and_fences_keep_growing() {
    if !can_run() {
        return;
    }
    let mut cluster = Cluster::start();
    let mut c = RedisLocksConfig::cluster(cluster.urls());
    c.ttl = Duration::from_secs(3);
    c.key_prefix = "failover".into();
    let a = RedisLocks::new(&c).unwrap();
    let b = RedisLocks::new(&c).unwrap();
    a.ping().await.unwrap();

    // Mailboxes on every shard; then kill the master of one of them.
    let mailboxes: Vec<String> = (0..30).map(|i| format!("t/user{i}")).collect();
    let mut highest = std::collections::HashMap::new();
    for m in &mailboxes {
        let g = a.acquire(m).await.unwrap();
        assert!(matches!(b.acquire(m).await, Err(LockError::InUse)));
        highest.insert(m.clone(), g.fence());
        g.release().await;
    }
    let victim = &mailboxes[0];
    let node = cluster.master_of(&a.lock_key(victim));
    let shard: std::collections::HashMap<&String, usize> = mailboxes
        .iter()
        .map(|m| (m, cluster.master_of(&a.lock_key(m))))
        .collect();
    let distinct: std::collections::HashSet<&usize> = shard.values().collect();
    assert_eq!(
        distinct.len(),
        3,
        "the mailboxes spread over the three masters"
    );
    servers::cli(cluster.nodes[node].port, &["wait", "1", "2000"]);
    cluster.nodes[node].kill();
    let killed = Instant::now();

    // Mailboxes on the other shards never stop working.
    for m in &mailboxes {
        if shard[m] != node {
            let g = b.acquire(m).await.unwrap();
            g.release().await;
        }
    }
    let (_, g) = until_acquired(&b, victim).await;
    eprintln!(
        "the killed shard's logins resumed after {:?}",
        killed.elapsed()
    );
    assert!(g.fence() > highest[victim]);
    g.release().await;
    for m in &mailboxes {
        let g = a.acquire(m).await.unwrap();
        assert!(g.fence() > highest[m], "{m}: fence went back");
        g.release().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_work_on_a_cluster() {
    if !can_run() {
        return;
    }
    let cluster = Cluster::start();
    let mut c = RedisLocksConfig::cluster(cluster.urls());
    c.key_prefix = "limits".into();
    let locks = RedisLocks::new(&c).unwrap();
    let other = RedisLocks::new(&c).unwrap();
    let config = || LimitsConfig {
        max_connections_per_ip: 2,
        ..LimitsConfig::default()
    };
    // Two replicas of the fleet, one cap between them.
    let first = RedisLimits::new(&locks, config());
    let second = RedisLimits::new(&other, config());
    let ip = "192.0.2.7".parse().unwrap();
    let one = first.connect(ip).await.expect("first connection");
    let two = second.connect(ip).await.expect("second connection");
    assert!(
        first.connect(ip).await.is_err(),
        "the third connection, on either replica, is over the fleet-wide cap"
    );
    drop(one);
    drop(two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_listings_and_kicks_work_on_a_cluster() {
    if !can_run() {
        return;
    }
    let cluster = Cluster::start();
    let mut c = RedisLocksConfig::cluster(cluster.urls());
    c.key_prefix = "fleet".into();
    let ttl = Duration::from_secs(30);
    let a = RedisFleet::new(&RedisLocks::new(&c).unwrap(), "aaaa0001", ttl);
    let b = RedisFleet::new(&RedisLocks::new(&c).unwrap(), "bbbb0002", ttl);
    a.publish(&[("aaaa0001-000001".into(), "bob".into())])
        .await
        .expect("the scripts' keys share the {fleet} slot");
    b.publish(&[]).await.unwrap();
    let mut seen = a.listings().await.unwrap();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("aaaa0001".to_string(), vec!["bob".to_string()]),
            ("bbbb0002".to_string(), vec![]),
        ]
    );
    b.request_kick("aaaa0001", &["aaaa0001-000001".into()])
        .await
        .unwrap();
    assert_eq!(
        a.take_kicks().await.unwrap(),
        vec!["aaaa0001-000001".to_string()]
    );
}
