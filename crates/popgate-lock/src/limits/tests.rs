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

struct Memory;

impl crate::conformance::LimitsBackend for Memory {
    fn instance(&self, config: LimitsConfig) -> Arc<dyn Limits> {
        Arc::new(MemoryLimits::new(config))
    }
}

#[tokio::test(start_paused = true)]
async fn memory_limits_pass_the_conformance_kit() {
    crate::conformance::run_limits(&Memory).await;
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

#[tokio::test(start_paused = true)]
async fn reconfigure_applies_to_what_comes_next_and_keeps_what_is_counted() {
    let l = limits(10, 1);
    let held = l.connect(ip("192.0.2.1")).await.unwrap();
    assert!(matches!(
        l.connect(ip("192.0.2.1")).await,
        Err(Rejected::PerIp)
    ));
    assert_eq!(fail(&l, "192.0.2.9", Some("bob@x")).await, Duration::ZERO);
    assert_eq!(peek(&l, "192.0.2.9", Some("bob@x")).await, S(2));

    l.reconfigure(LimitsConfig {
        max_connections: 10,
        max_connections_per_ip: 2,
        penalty_base: S(5),
        penalty_max: S(60),
        ..Default::default()
    });
    assert_eq!(l.config().max_connections_per_ip, 2);
    // The open connection is still counted: one more, not two.
    let second = l.connect(ip("192.0.2.1")).await.unwrap();
    assert!(matches!(
        l.connect(ip("192.0.2.1")).await,
        Err(Rejected::PerIp)
    ));
    // The failure is kept and priced by the new penalty.
    assert_eq!(peek(&l, "192.0.2.9", Some("bob@x")).await, S(5));

    // Lowered below what is open: nothing is cut, nothing new gets in.
    l.reconfigure(LimitsConfig {
        max_connections: 1,
        ..Default::default()
    });
    assert!(matches!(
        l.connect(ip("198.51.100.1")).await,
        Err(Rejected::Global)
    ));
    drop((held, second));
    assert_eq!(l.open_connections(), 0);
    assert!(l.connect(ip("198.51.100.1")).await.is_ok());
}

/// Attempts from one address in flight at once, each settled, waited out
/// and finished with its verdict as soon as it may; the time each was
/// answered, from the start (the clock is paused: these are exact).
async fn in_parallel(l: &Arc<MemoryLimits>, verdicts: &[Verdict]) -> Vec<Duration> {
    let start = tokio::time::Instant::now();
    let held: Vec<Attempt> = (0..verdicts.len())
        .map(|i| l.local_attempt(ip("192.0.2.50"), Some(&format!("user{i}@office"))))
        .collect();
    let runs = held.into_iter().zip(verdicts).map(|(a, &v)| {
        let l = l.clone();
        tokio::spawn(async move {
            let wait = l.settle(&a).await;
            tokio::time::sleep(wait).await;
            l.finish(a, v).await;
            start.elapsed()
        })
    });
    let mut out = Vec::new();
    for r in runs.collect::<Vec<_>>() {
        out.push(r.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn parallel_logins_that_succeed_pay_nothing() {
    let l = limits(100, 100);
    let answered = in_parallel(&l, &[Verdict::Success; 32]).await;
    assert_eq!(answered, [Duration::ZERO; 32], "no login waited");
    assert_eq!(l.in_flight_keys(), 0, "nothing stays in flight");
    // And none of them left a failure behind.
    assert_eq!(
        peek(&l, "192.0.2.50", Some("new@office")).await,
        Duration::ZERO
    );
}

#[tokio::test(start_paused = true)]
async fn parallel_failures_each_pay_for_those_ahead() {
    let l = limits(100, 100);
    let answered = in_parallel(&l, &[Verdict::Failure; 5]).await;
    assert_eq!(answered, [S(0), S(2), S(4), S(8), S(15)]);
    assert_eq!(l.in_flight_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn only_the_failures_ahead_are_paid_for() {
    let l = limits(100, 100);
    use Verdict::{Failure, Success, Unchecked};
    let answered = in_parallel(
        &l,
        &[Success, Failure, Unchecked, Success, Failure, Success],
    )
    .await;
    // Nothing ahead of the first two has failed; one failure ahead of the
    // next three (2 s from the start); two ahead of the last.
    assert_eq!(answered, [S(0), S(0), S(2), S(2), S(2), S(4)]);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_waits_no_longer_than_its_penalty() {
    let l = limits(100, 100);
    let stuck = l.local_attempt(ip("192.0.2.51"), Some("a@office"));
    let next = l.local_attempt(ip("192.0.2.51"), Some("b@office"));
    assert_eq!(next.penalty, S(2));
    assert_eq!(next.upfront(), Duration::ZERO, "nothing has failed yet");
    let start = tokio::time::Instant::now();
    assert_eq!(l.settle(&next).await, Duration::ZERO);
    assert_eq!(
        start.elapsed(),
        S(2),
        "an attempt ahead that never ends costs the penalty"
    );
    // One abandoned (its client hung up) counts as a failure.
    drop(stuck);
    l.finish(next, Verdict::Success).await;
    let after = l.local_attempt(ip("192.0.2.51"), Some("c@office"));
    assert_eq!(after.upfront(), S(2), "the abandoned attempt is a failure");
    assert_eq!(l.settle(&after).await, S(2));
}
