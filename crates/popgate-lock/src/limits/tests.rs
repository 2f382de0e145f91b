use super::*;
use std::sync::Arc;

fn limits(max: usize, per_ip: usize) -> Arc<MemoryLimits> {
    MemoryLimits::new(LimitsConfig {
        max_connections: max,
        max_connections_per_ip: per_ip,
        ..Default::default()
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const S: fn(u64) -> Duration = Duration::from_secs;

/// One attempt that fails; returns its penalty.
async fn fail(l: &Arc<MemoryLimits>, from: &str, account: Option<&str>) -> Duration {
    let a = l.attempt(ip(from), account).await;
    let p = a.penalty;
    l.finish(a, Verdict::Failure).await;
    p
}

async fn succeed(l: &Arc<MemoryLimits>, from: &str, account: &str) -> Duration {
    let a = l.attempt(ip(from), Some(account)).await;
    let p = a.penalty;
    l.finish(a, Verdict::Success).await;
    p
}

/// The penalty the next attempt would pay, without counting it.
async fn peek(l: &Arc<MemoryLimits>, from: &str, account: Option<&str>) -> Duration {
    let a = l.attempt(ip(from), account).await;
    let p = a.penalty;
    l.finish(a, Verdict::Unchecked).await;
    p
}

#[tokio::test]
async fn caps_count_in_and_out() {
    let l = limits(3, 2);
    let a = ip("192.0.2.1");
    let b = ip("192.0.2.2");
    let a1 = l.connect(a).await.unwrap();
    let _a2 = l.connect(a).await.unwrap();
    assert_eq!(l.connect(a).await.err(), Some(Rejected::PerIp));
    let _b1 = l.connect(b).await.unwrap();
    assert_eq!(l.connect(b).await.err(), Some(Rejected::Global));
    drop(a1);
    let _b2 = l.connect(b).await.unwrap();
    assert_eq!(l.open_connections(), 3);
}

#[test]
fn prefixes() {
    let net = |s: &str, v4, v6| ClientNet::new(ip(s), v4, v6).to_string();
    assert_eq!(net("192.0.2.7", 32, 64), "192.0.2.7");
    assert_eq!(net("192.0.2.7", 24, 64), "192.0.2.0/24");
    assert_eq!(net("::ffff:192.0.2.7", 32, 64), "192.0.2.7");
    assert_eq!(net("2001:db8:1:2:3:4:5:6", 32, 64), "2001:db8:1:2::/64");
    assert_eq!(net("2001:db8:1:2:3:4:5:6", 32, 48), "2001:db8:1::/48");
    assert_eq!(net("2001:db8::1", 32, 128), "2001:db8::1");
    assert_eq!(net("2001:db8::1", 0, 0), "::/0");
    assert_eq!(net("192.0.2.7", 0, 64), "0.0.0.0/0");
}

#[tokio::test]
async fn one_ipv6_64_shares_a_cap_and_other_64s_do_not() {
    let l = limits(100, 2);
    let _a = l.connect(ip("2001:db8:0:1::1")).await.unwrap();
    let _b = l.connect(ip("2001:db8:0:1:ffff::2")).await.unwrap();
    assert_eq!(
        l.connect(ip("2001:db8:0:1:dead:beef:0:3")).await.err(),
        Some(Rejected::PerIp),
        "a third address in the same /64 is one connection too many"
    );
    let _c = l.connect(ip("2001:db8:0:2::1")).await.unwrap();
    let _d = l.connect(ip("2001:db8:0:2::2")).await.unwrap();
}

#[tokio::test]
async fn one_ipv6_64_shares_a_penalty_and_other_64s_do_not() {
    let l = limits(100, 100);
    assert_eq!(fail(&l, "2001:db8:0:1::1", None).await, Duration::ZERO);
    assert_eq!(fail(&l, "2001:db8:0:1::2", None).await, S(2));
    assert_eq!(
        fail(&l, "2001:db8:0:1:ffff:ffff:ffff:ffff", None).await,
        S(4)
    );
    assert_eq!(peek(&l, "2001:db8:0:2::1", None).await, Duration::ZERO);
    // IPv4 is per address by default; /24 when configured.
    assert_eq!(fail(&l, "192.0.2.1", None).await, Duration::ZERO);
    assert_eq!(peek(&l, "192.0.2.2", None).await, Duration::ZERO);
    let l24 = MemoryLimits::new(LimitsConfig {
        ipv4_prefix: 24,
        ..Default::default()
    });
    assert_eq!(fail(&l24, "192.0.2.1", None).await, Duration::ZERO);
    assert_eq!(peek(&l24, "192.0.2.200", None).await, S(2));
    assert_eq!(peek(&l24, "192.0.3.1", None).await, Duration::ZERO);
}

#[tokio::test]
async fn penalty_doubles_and_is_capped() {
    let l = limits(10, 10);
    let bob = Some("bob@a");
    assert_eq!(fail(&l, "192.0.2.1", bob).await, Duration::ZERO);
    assert_eq!(fail(&l, "192.0.2.1", bob).await, S(2));
    assert_eq!(peek(&l, "192.0.2.1", bob).await, S(4));
    // Another address trying the same account is slowed down too.
    assert_eq!(peek(&l, "192.0.2.9", Some("BOB@a")).await, S(4));
    // The same client over IPv4-mapped IPv6 is the same address.
    assert_eq!(peek(&l, "::ffff:192.0.2.1", Some("x")).await, S(4));
    for _ in 0..10 {
        fail(&l, "192.0.2.1", bob).await;
    }
    assert_eq!(peek(&l, "192.0.2.1", bob).await, S(15));
}

#[tokio::test]
async fn success_on_own_mailbox_does_not_clear_the_penalty_for_guessing_another() {
    let l = limits(10, 10);
    let attacker = "198.51.100.7";
    fail(&l, attacker, Some("victim@a")).await;
    fail(&l, attacker, Some("victim@a")).await;
    fail(&l, attacker, Some("victim@a")).await;
    // His own mailbox, right password: pays for his failures, and ...
    assert_eq!(succeed(&l, attacker, "mallory@a").await, S(8));
    // ... the next guess at the victim still pays as much as before.
    assert_eq!(peek(&l, attacker, Some("victim@a")).await, S(8));
    assert_eq!(peek(&l, attacker, Some("other@a")).await, S(8));
    // Logging in to his own mailbox again and again changes nothing.
    for _ in 0..5 {
        succeed(&l, attacker, "mallory@a").await;
    }
    assert_eq!(peek(&l, attacker, Some("victim@a")).await, S(8));
}

#[tokio::test]
async fn parallel_attempts_each_pay() {
    let l = limits(10, 10);
    // Five attempts at once: none finished when the next is counted.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(l.attempt(ip("203.0.113.5"), Some("victim@a")).await);
    }
    let penalties: Vec<u64> = held.iter().map(|a| a.penalty.as_secs()).collect();
    assert_eq!(penalties, [0, 2, 4, 8, 15]);
    // From elsewhere, against the same account: also slowed.
    let other = l.attempt(ip("203.0.114.5"), Some("victim@a")).await;
    assert_eq!(other.penalty, S(15));
    // And from the same address against other accounts.
    let third = l.attempt(ip("203.0.113.5"), Some("x@a")).await;
    assert_eq!(third.penalty, S(15));
    // Dropped unfinished (the client hung up during the penalty): still
    // counted, as failures.
    drop((held, other, third));
    assert_eq!(peek(&l, "203.0.113.5", None).await, S(15));
}

#[tokio::test]
async fn a_known_good_victim_is_not_delayed_by_failures_from_elsewhere() {
    let l = limits(10, 10);
    let home = "192.0.2.10";
    assert_eq!(succeed(&l, home, "victim@a").await, Duration::ZERO);
    // An attacker guesses from another prefix ...
    for _ in 0..8 {
        fail(&l, "2001:db8:bad::1", Some("victim@a")).await;
    }
    // ... and others behind the victim's NAT fail on their own accounts.
    for _ in 0..4 {
        fail(&l, home, Some("neighbour@a")).await;
    }
    // The victim, from home: no delay.
    assert_eq!(succeed(&l, home, "victim@a").await, Duration::ZERO);
    // From a new place the account-wide record applies.
    assert_eq!(peek(&l, "203.0.113.99", Some("victim@a")).await, S(15));
    // The attacker still pays.
    assert_eq!(peek(&l, "2001:db8:bad::2", Some("victim@a")).await, S(15));
    // The victim's own recent failures from home count.
    assert_eq!(fail(&l, home, Some("victim@a")).await, Duration::ZERO);
    assert_eq!(fail(&l, home, Some("victim@a")).await, S(2));
    assert_eq!(succeed(&l, home, "victim@a").await, S(4));
    assert_eq!(peek(&l, home, Some("victim@a")).await, Duration::ZERO);
}

#[tokio::test]
async fn unchecked_attempts_are_taken_back() {
    let l = limits(10, 10);
    for _ in 0..5 {
        let a = l.attempt(ip("192.0.2.1"), Some("bob@a")).await;
        l.finish(a, Verdict::Unchecked).await;
    }
    assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, Duration::ZERO);
}

#[tokio::test]
async fn names_that_are_no_login_make_no_records() {
    let l = limits(10, 10);
    for _ in 0..1000 {
        fail(&l, "192.0.2.1", None).await;
    }
    assert_eq!(l.failure_records(), 1, "only the address is counted");
}

#[tokio::test]
async fn failure_records_stay_within_their_bound() {
    let bound = 1000;
    let l = MemoryLimits::new(LimitsConfig {
        max_failure_records: bound,
        ..Default::default()
    });
    for i in 0..200_000u32 {
        let name = format!("{i:x}{}@a", "x".repeat(1000));
        let from = format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff);
        fail(&l, &from, Some(&name)).await;
        assert!(
            l.failure_records() <= bound,
            "{} at {i}",
            l.failure_records()
        );
    }
    // What was touched recently is still counted.
    let a = l.attempt(ip("2001:db8:3:d3f::1"), Some("x@a")).await;
    assert_eq!(a.penalty, S(2), "the last prefix's failure is remembered");
}

#[tokio::test]
async fn the_default_bound_holds_for_200000_garbage_names() {
    let l = limits(10, 10);
    for i in 0..200_000u32 {
        let name = format!("{i}-{}@acme.example", "g".repeat(1000));
        fail(&l, "192.0.2.1", Some(&name)).await;
    }
    assert!(
        l.failure_records() <= LimitsConfig::default().max_failure_records,
        "{}",
        l.failure_records()
    );
    // The attacker's address is still counted (touched every time).
    assert_eq!(peek(&l, "192.0.2.1", None).await, S(15));
}

#[tokio::test]
async fn known_good_marks_stay_within_their_bound() {
    let l = MemoryLimits::new(LimitsConfig {
        max_known_good: 100,
        ..Default::default()
    });
    for i in 0..1000 {
        succeed(&l, "192.0.2.1", &format!("u{i}@a")).await;
        assert!(l.known_good_records() <= 100);
    }
}

#[tokio::test(start_paused = true)]
async fn records_expire_after_the_window() {
    let l = limits(10, 10);
    fail(&l, "192.0.2.1", Some("bob@a")).await;
    fail(&l, "192.0.2.1", Some("bob@a")).await;
    assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, S(4));
    tokio::time::advance(Duration::from_secs(15 * 60 + 1)).await;
    assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, Duration::ZERO);
    // Known good lasts 30 days.
    succeed(&l, "192.0.2.1", "bob@a").await;
    for _ in 0..4 {
        fail(&l, "192.0.2.99", Some("bob@a")).await;
    }
    tokio::time::advance(Duration::from_secs(29 * 24 * 3600)).await;
    for _ in 0..4 {
        fail(&l, "192.0.2.99", Some("bob@a")).await;
    }
    assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, Duration::ZERO);
    tokio::time::advance(Duration::from_secs(2 * 24 * 3600)).await;
    for _ in 0..3 {
        fail(&l, "192.0.2.99", Some("bob@a")).await;
    }
    assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, S(8));
}
