//! The rules of [`Limits`], as the [`crate::limits`] documentation states
//! them. Each rule counts its own client addresses and accounts, so that on
//! a shared backend the rules do not see each other's counts.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::limits::{Attempt, ConnectionPermit, Limits, LimitsConfig, Rejected, Verdict};

/// How long a backend may take to count out a dropped connection (a remote
/// backend removes it in the background).
const COUNTED_OUT_WITHIN: Duration = Duration::from_secs(5);

/// A limits backend under test.
pub trait LimitsBackend: Send + Sync {
    /// One more instance with `config`, as another process (or this one
    /// restarted) would make it, on the same shared state, if any.
    fn instance(&self, config: LimitsConfig) -> Arc<dyn Limits>;

    /// Whether instances count together: a fleet backend (Redis). The kit
    /// then spreads each rule's attempts and connections over two.
    fn shared(&self) -> bool {
        false
    }
}

/// The configuration the rules are written for: penalties of 2, 4, 8 and
/// at most 15 seconds, two connections per client prefix, failures
/// forgotten after 3 s and known-good marks after 1 s (so that a backend
/// that keeps time in a real server runs the kit in seconds).
fn kit_config() -> LimitsConfig {
    LimitsConfig {
        max_connections: 100,
        max_connections_per_ip: 2,
        penalty_base: S(2),
        penalty_max: S(15),
        penalty_window: S(3),
        known_good_for: S(1),
        ..LimitsConfig::default()
    }
}

const S: fn(u64) -> Duration = Duration::from_secs;

/// Runs every rule against `backend`. Its shared state, if any, should be
/// fresh (say, a new key prefix), so that an earlier run does not count.
pub async fn run_limits(backend: &dyn LimitsBackend) {
    let config = kit_config();
    let (a, b) = pair(backend, &config);
    assert_eq!(
        a.config().max_connections_per_ip,
        config.max_connections_per_ip,
        "config() is the configuration the limits were made with"
    );

    caps_count_per_prefix(&a, &b).await;
    the_process_cap_counts_this_process(backend).await;
    penalties_double_up_to_the_ceiling(&a, &b).await;
    success_takes_back_only_its_own_counts(&a, &b).await;
    parallel_and_abandoned_attempts_each_pay(&a, &b).await;
    attempts_in_flight_that_succeed_cost_nothing(&a).await;
    a_known_good_pair_pays_only_its_own_failures(&a, &b).await;
    unchecked_attempts_are_taken_back(&a, &b).await;
    names_that_are_no_login_count_on_the_prefix(&a, &b).await;
    one_ipv6_64_or_ipv4_address_is_one_client(&a, &b).await;
    prefixes_follow_the_config(backend).await;
    tokio::join!(
        failures_are_forgotten_after_the_window(&a, &b, &config),
        known_good_marks_expire(&a, &b, &config),
    );
}

/// Two instances of a shared backend, or one instance twice.
fn pair(backend: &dyn LimitsBackend, config: &LimitsConfig) -> (Arc<dyn Limits>, Arc<dyn Limits>) {
    let a = backend.instance(config.clone());
    let b = if backend.shared() {
        backend.instance(config.clone())
    } else {
        a.clone()
    };
    (a, b)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address in the kit")
}

async fn connect(l: &Arc<dyn Limits>, from: &str) -> ConnectionPermit {
    l.connect(ip(from))
        .await
        .unwrap_or_else(|r| panic!("connection from {from} refused: {}", r.reason()))
}

async fn refused(l: &Arc<dyn Limits>, from: &str) -> Option<Rejected> {
    l.connect(ip(from)).await.err()
}

async fn attempt(l: &Arc<dyn Limits>, from: &str, account: Option<&str>) -> Attempt {
    l.attempt(ip(from), account).await
}

/// One attempt that fails; its penalty.
async fn fail(l: &Arc<dyn Limits>, from: &str, account: Option<&str>) -> Duration {
    let a = attempt(l, from, account).await;
    let p = a.penalty;
    l.finish(a, Verdict::Failure).await;
    p
}

async fn succeed(l: &Arc<dyn Limits>, from: &str, account: &str) -> Duration {
    let a = attempt(l, from, Some(account)).await;
    let p = a.penalty;
    l.finish(a, Verdict::Success).await;
    p
}

/// The penalty the next attempt would pay, without counting it.
async fn peek(l: &Arc<dyn Limits>, from: &str, account: Option<&str>) -> Duration {
    let a = attempt(l, from, account).await;
    let p = a.penalty;
    l.finish(a, Verdict::Unchecked).await;
    p
}

async fn caps_count_per_prefix(a: &Arc<dyn Limits>, b: &Arc<dyn Limits>) {
    let first = connect(a, "10.1.0.1").await;
    let _second = connect(b, "10.1.0.1").await;
    assert_eq!(
        refused(a, "10.1.0.1").await,
        Some(Rejected::PerIp),
        "a third connection from one address is one too many"
    );
    assert_eq!(
        refused(b, "::ffff:10.1.0.1").await,
        Some(Rejected::PerIp),
        "an IPv4 client over IPv4-mapped IPv6 is the same client"
    );
    let _other = connect(a, "10.1.0.2").await;

    let _v6a = connect(a, "2001:db8:1:1::1").await;
    let _v6b = connect(b, "2001:db8:1:1:ffff::2").await;
    assert_eq!(
        refused(a, "2001:db8:1:1:dead:beef:0:3").await,
        Some(Rejected::PerIp),
        "a third address of one IPv6 /64 is one connection too many"
    );
    let _v6c = connect(a, "2001:db8:1:2::1").await;

    drop(first);
    let until = tokio::time::Instant::now() + COUNTED_OUT_WITHIN;
    loop {
        match a.connect(ip("10.1.0.1")).await {
            Ok(_) => break,
            Err(r) if tokio::time::Instant::now() < until => {
                assert_eq!(r, Rejected::PerIp);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                panic!("a dropped connection is not counted out within {COUNTED_OUT_WITHIN:?}")
            }
        }
    }
}

async fn the_process_cap_counts_this_process(backend: &dyn LimitsBackend) {
    let config = LimitsConfig {
        max_connections: 2,
        max_connections_per_ip: 50,
        ..kit_config()
    };
    let l = backend.instance(config.clone());
    let one = connect(&l, "10.2.0.1").await;
    let _two = connect(&l, "10.2.0.2").await;
    assert_eq!(
        refused(&l, "10.2.0.3").await,
        Some(Rejected::Global),
        "max_connections caps the process"
    );
    let other = backend.instance(config);
    let _elsewhere = connect(&other, "10.2.0.3").await;
    drop(one);
    let _three = connect(&l, "10.2.0.4").await;
}

async fn penalties_double_up_to_the_ceiling(a: &Arc<dyn Limits>, b: &Arc<dyn Limits>) {
    let bob = Some("bob-3@kit");
    assert_eq!(fail(a, "10.3.0.1", bob).await, Duration::ZERO);
    assert_eq!(fail(b, "10.3.0.1", bob).await, S(2));
    assert_eq!(peek(a, "10.3.0.1", bob).await, S(4));
    assert_eq!(
        peek(b, "10.3.0.9", Some("BOB-3@kit")).await,
        S(4),
        "another address trying the account (in any case) is slowed down too"
    );
    assert_eq!(
        peek(a, "::ffff:10.3.0.1", Some("x-3@kit")).await,
        S(4),
        "the client prefix counts whatever the account"
    );
    for _ in 0..10 {
        fail(a, "10.3.0.1", bob).await;
    }
    assert_eq!(peek(b, "10.3.0.1", bob).await, S(15), "penalty_max caps it");
}

async fn success_takes_back_only_its_own_counts(a: &Arc<dyn Limits>, b: &Arc<dyn Limits>) {
    let attacker = "10.4.0.7";
    for _ in 0..3 {
        fail(a, attacker, Some("victim-4@kit")).await;
    }
    assert_eq!(
        succeed(b, attacker, "mallory-4@kit").await,
        S(8),
        "a success pays for the prefix's failures"
    );
    assert_eq!(peek(a, attacker, Some("victim-4@kit")).await, S(8));
    assert_eq!(peek(b, attacker, Some("other-4@kit")).await, S(8));
    for _ in 0..5 {
        succeed(a, attacker, "mallory-4@kit").await;
    }
    assert_eq!(
        peek(b, attacker, Some("victim-4@kit")).await,
        S(8),
        "logging in to one's own mailbox clears no penalty for guessing others"
    );
}

async fn parallel_and_abandoned_attempts_each_pay(a: &Arc<dyn Limits>, b: &Arc<dyn Limits>) {
    let mut held = Vec::new();
    for i in 0..8 {
        let l = if i % 2 == 0 { a } else { b };
        held.push(attempt(l, "10.5.0.5", Some("victim-5@kit")).await);
    }
    let secs: Vec<u64> = held.iter().map(|a| a.penalty.as_secs()).collect();
    assert_eq!(
        secs,
        [0, 2, 4, 8, 15, 15, 15, 15],
        "attempts not yet finished each see the earlier ones"
    );
    assert_eq!(peek(a, "10.5.1.5", Some("victim-5@kit")).await, S(15));
    assert_eq!(peek(b, "10.5.0.5", Some("x-5@kit")).await, S(15));
    // Dropped unfinished (the client hung up during the penalty): counted
    // as failures.
    drop(held);
    assert_eq!(peek(a, "10.5.0.5", None).await, S(15));
    assert_eq!(peek(b, "10.5.2.5", Some("victim-5@kit")).await, S(15));
}

async fn attempts_in_flight_that_succeed_cost_nothing(a: &Arc<dyn Limits>) {
    let office = "10.13.0.1";
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(attempt(a, office, Some(&format!("user{i}-13@kit"))).await);
    }
    assert_eq!(held[3].penalty, S(8), "attempts in flight are counted in");
    assert!(
        held.iter().all(|h| h.upfront().is_zero()),
        "nothing has failed yet: no wait before the check"
    );
    for h in held {
        assert_eq!(
            a.settle(&h).await,
            Duration::ZERO,
            "logins ahead that succeeded cost nothing"
        );
        a.finish(h, Verdict::Success).await;
    }
    let first = attempt(a, office, Some("x-13@kit")).await;
    let second = attempt(a, office, Some("y-13@kit")).await;
    a.finish(first, Verdict::Failure).await;
    let wait = a.settle(&second).await;
    assert!(
        wait > S(1) && wait <= S(2),
        "a failure ahead is paid for: {wait:?}"
    );
    a.finish(second, Verdict::Success).await;
}

async fn a_known_good_pair_pays_only_its_own_failures(a: &Arc<dyn Limits>, b: &Arc<dyn Limits>) {
    let home = "2001:db8:6:1::10";
    let victim = "victim-6@kit";
    assert_eq!(succeed(a, home, victim).await, Duration::ZERO);
    for _ in 0..8 {
        fail(b, "2001:db8:66::1", Some(victim)).await;
    }
    for _ in 0..4 {
        fail(b, "2001:db8:6:1::99", Some("neighbour-6@kit")).await;
    }
    assert_eq!(
        succeed(b, "2001:db8:6:1::11", victim).await,
        Duration::ZERO,
        "from home (the same /64), no delay for others' failures"
    );
    assert_eq!(succeed(a, home, victim).await, Duration::ZERO);
    assert_eq!(
        peek(a, "10.6.0.99", Some(victim)).await,
        S(15),
        "from a new place the account's failures count"
    );
    assert_eq!(peek(b, "2001:db8:66::2", Some(victim)).await, S(15));
    assert_eq!(fail(a, home, Some(victim)).await, Duration::ZERO);
    assert_eq!(
        fail(b, home, Some(victim)).await,
        S(2),
        "the pair's own failures count"
    );
    assert_eq!(succeed(a, home, victim).await, S(4));
    assert_eq!(
        peek(b, home, Some(victim)).await,
        Duration::ZERO,
        "a success clears the pair's failures"
    );
}

async fn unchecked_attempts_are_taken_back(a: &Arc<dyn Limits>, b: &Arc<dyn Limits>) {
    for i in 0..5 {
        let l = if i % 2 == 0 { a } else { b };
        let at = attempt(l, "10.7.0.1", Some("bob-7@kit")).await;
        l.finish(at, Verdict::Unchecked).await;
    }
    assert_eq!(peek(a, "10.7.0.1", Some("bob-7@kit")).await, Duration::ZERO);
}

async fn names_that_are_no_login_count_on_the_prefix(a: &Arc<dyn Limits>, b: &Arc<dyn Limits>) {
    for _ in 0..3 {
        fail(a, "10.8.0.1", None).await;
    }
    assert_eq!(peek(b, "10.8.0.1", None).await, S(8));
    assert_eq!(peek(b, "10.8.0.1", Some("anyone-8@kit")).await, S(8));
    assert_eq!(peek(a, "10.8.0.2", None).await, Duration::ZERO);
}

async fn one_ipv6_64_or_ipv4_address_is_one_client(a: &Arc<dyn Limits>, b: &Arc<dyn Limits>) {
    assert_eq!(fail(a, "2001:db8:12:1::1", None).await, Duration::ZERO);
    assert_eq!(fail(b, "2001:db8:12:1::2", None).await, S(2));
    assert_eq!(
        peek(a, "2001:db8:12:1:ffff:ffff:ffff:ffff", None).await,
        S(4),
        "one /64 shares a penalty"
    );
    assert_eq!(peek(b, "2001:db8:12:2::1", None).await, Duration::ZERO);
    assert_eq!(fail(a, "10.12.0.1", None).await, Duration::ZERO);
    assert_eq!(
        peek(b, "10.12.0.2", None).await,
        Duration::ZERO,
        "IPv4 counts per address"
    );
}

async fn prefixes_follow_the_config(backend: &dyn LimitsBackend) {
    let config = LimitsConfig {
        ipv4_prefix: 24,
        ipv6_prefix: 48,
        ..kit_config()
    };
    let (a, b) = pair(backend, &config);
    assert_eq!(fail(&a, "10.9.0.1", None).await, Duration::ZERO);
    assert_eq!(peek(&b, "10.9.0.200", None).await, S(2), "one /24");
    assert_eq!(peek(&a, "10.9.1.1", None).await, Duration::ZERO);
    assert_eq!(fail(&a, "2001:db8:9:1::1", None).await, Duration::ZERO);
    assert_eq!(peek(&b, "2001:db8:9:ffff::1", None).await, S(2), "one /48");
    assert_eq!(peek(&a, "2001:db8:10::1", None).await, Duration::ZERO);
}

async fn failures_are_forgotten_after_the_window(
    a: &Arc<dyn Limits>,
    b: &Arc<dyn Limits>,
    config: &LimitsConfig,
) {
    fail(a, "10.10.0.1", Some("bob-10@kit")).await;
    fail(b, "10.10.0.1", Some("bob-10@kit")).await;
    assert_eq!(peek(a, "10.10.0.1", Some("bob-10@kit")).await, S(4));
    tokio::time::sleep(config.penalty_window + Duration::from_millis(500)).await;
    assert_eq!(
        peek(b, "10.10.0.1", Some("bob-10@kit")).await,
        Duration::ZERO,
        "failures older than penalty_window are forgotten"
    );
}

async fn known_good_marks_expire(a: &Arc<dyn Limits>, b: &Arc<dyn Limits>, config: &LimitsConfig) {
    let home = "10.11.0.1";
    succeed(a, home, "bob-11@kit").await;
    for _ in 0..3 {
        fail(b, "10.11.0.99", Some("bob-11@kit")).await;
    }
    assert_eq!(peek(b, home, Some("bob-11@kit")).await, Duration::ZERO);
    // Still within the penalty window of the failures above.
    assert!(config.known_good_for + Duration::from_secs(1) < config.penalty_window);
    tokio::time::sleep(config.known_good_for + Duration::from_millis(500)).await;
    assert_eq!(
        peek(a, home, Some("bob-11@kit")).await,
        S(8),
        "after known_good_for the account's failures count from home too"
    );
}
