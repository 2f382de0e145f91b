//! Measurements, not assertions: how many password checks one core does
//! per second, per scheme. Run with
//! `cargo test -p popgate-auth --release --test bench -- --ignored --nocapture`.
//! BENCHMARKS.md ("Login with real hashes") has the figures.

use std::time::{Duration, Instant};

use popgate_auth::scheme::{self, HashParams, Scheme};

/// What `doveadm pw -s SCHEME -p secret` of Dovecot 2.3.19 wrote: its
/// default costs (ARGON2ID m=64 MiB t=3 p=1, BLF-CRYPT 5, SHA512-CRYPT
/// 5000 rounds).
const DOVECOT: [(&str, &str); 5] = [
    (
        "ARGON2ID (Dovecot: m=64MiB,t=3,p=1)",
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$7uoikPf1kpdWVxnIGht1Rg$YMosx6I/NbN9jWhrGHEQUcewXTr5+KPxaCYGs1c1rTg",
    ),
    (
        "BLF-CRYPT (Dovecot: cost 5)",
        "{BLF-CRYPT}$2y$05$69Oz.MtsJTDEp2n4xdN4guGeU7HLcP7dSL5nfZXJDxeOzTSswxj9O",
    ),
    (
        "SHA512-CRYPT (5000 rounds)",
        "{SHA512-CRYPT}$6$Yzb.LEYqVvRgjwJs$GL3OhkUuesThdv5UyGu9F.SzbVMhi4VrasT7yunYHa4dizjGlqVRXGKyyZ7cPZ4MpDdPwSHYw0Fg633Zwzyt/.",
    ),
    (
        "SSHA512",
        "{SSHA512}q30mK7uI2Z/HgFlcnRLBhP1nzRROEJ9wc/gbS8ruPwBF+nQ8Xfh73o/duNQNN85e91jN34/Mf8up5FJQv1RbKrYGek0=",
    ),
    ("PLAIN", "{PLAIN}secret"),
];

/// Checks `stored` against the right password for about `budget` (at
/// least 3 times): checks per second on this one thread.
fn rate(stored: &str, budget: Duration) -> (f64, u32) {
    assert!(scheme::verify(stored, b"secret").unwrap(), "{stored}");
    let started = Instant::now();
    let mut n = 0u32;
    while n < 3 || started.elapsed() < budget {
        // Batches, so that a clock read does not weigh on PLAIN.
        for _ in 0..n.clamp(1, 1000) {
            assert!(scheme::verify(stored, b"secret").unwrap());
        }
        n += n.clamp(1, 1000);
    }
    (f64::from(n) / started.elapsed().as_secs_f64(), n)
}

#[test]
#[ignore = "a benchmark: run it on purpose"]
fn verify_rate_per_core() {
    let budget = Duration::from_secs(2);
    let mut rows: Vec<(String, String)> = DOVECOT
        .iter()
        .map(|(name, stored)| ((*name).to_owned(), (*stored).to_owned()))
        .collect();
    // What `popgate pw` writes by default, for comparison.
    for (name, scheme) in [
        ("ARGON2ID (popgate pw: m=19MiB,t=2,p=1)", Scheme::Argon2id),
        ("BLF-CRYPT (popgate pw: cost 10)", Scheme::BlfCrypt),
    ] {
        let stored = scheme::hash_with(scheme, b"secret", &HashParams::PRODUCTION).unwrap();
        rows.push((name.to_owned(), stored));
    }
    println!("\n| scheme | checks/s on one core | ms per check | checks timed |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, stored) in rows {
        let (per_s, n) = rate(&stored, budget);
        println!("| {name} | {per_s:.1} | {:.4} | {n} |", 1000.0 / per_s);
    }
}
