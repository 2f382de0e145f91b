//! The Redis lock backend against real Redis servers.
//!
//! Normal tests use the shared Redis at `POPGATE_TEST_REDIS` (default
//! `redis://127.0.0.1:6379`), each under its own key prefix. Tests that stop,
//! restart or reconfigure Redis start a private `redis-server` on a free port
//! and never touch the shared one.
//!
//! Without a reachable Redis (or without `redis-server` for the private
//! ones) the tests say so and pass, unless `POPGATE_REQUIRE_REDIS=1` (the
//! project's test script sets it), where they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_redis::{RedisLocks, RedisLocksConfig};
use popgate_lock::{LockError, MailboxLocks};
use redis::AsyncCommands;

mod common;

use common::{required, shared_url};

fn skip(why: &str) {
    assert!(!required(), "POPGATE_REQUIRE_REDIS=1 but {why}");
    eprintln!("skipped: {why}");
}

fn unique_prefix() -> String {
    common::unique_prefix("popgate-test")
}

async fn raw(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    common::connect(url).await
}

/// The shared Redis, or `None` (skipped) when it is not there.
async fn shared() -> Option<(String, redis::aio::MultiplexedConnection)> {
    let url = shared_url();
    match raw(&url).await {
        Some(c) => Some((url, c)),
        None => {
            skip(&format!("no Redis answers at {url}"));
            None
        }
    }
}

fn config(url: &str, prefix: &str, ttl: Duration) -> RedisLocksConfig {
    let mut c = RedisLocksConfig::new(url);
    c.key_prefix = prefix.into();
    c.ttl = ttl;
    c
}

async fn wait_until(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    conn.get(key).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tokens_and_ttl_in_redis() {
    // The rules of the seam are the conformance kit's (tests/conformance.rs);
    // this is how the lock looks in Redis.
    let Some((url, mut conn)) = shared().await else {
        return;
    };
    let prefix = unique_prefix();
    let a = RedisLocks::new(&config(&url, &prefix, Duration::from_secs(30))).unwrap();
    let b = RedisLocks::new(&config(&url, &prefix, Duration::from_secs(30))).unwrap();
    assert_ne!(a.instance(), b.instance());
    assert_eq!(a.backend(), "redis");

    let held = a.acquire("acme/bob@acme.example").await.unwrap();
    let key = a.lock_key("acme/bob@acme.example");
    assert_eq!(key, format!("{prefix}:{{acme/bob@acme.example}}:lock"));
    let token = get(&mut conn, &key).await.expect("lock key set");
    assert!(
        token.starts_with(&format!("{}:{}-", held.fence(), a.instance())),
        "{token}"
    );
    let pttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(pttl > 25_000 && pttl <= 30_000, "{pttl}");
    held.release().await;
    assert_eq!(get(&mut conn, &key).await, None, "release deletes the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_grows_even_when_the_fence_key_is_lost() {
    let Some((url, mut conn)) = shared().await else {
        return;
    };
    let prefix = unique_prefix();
    let locks = RedisLocks::new(&config(&url, &prefix, Duration::from_secs(30))).unwrap();
    let mailbox = "t/carol";
    let fence_key = locks.fence_key(mailbox);

    let mut last = 0;
    for _ in 0..20 {
        let g = locks.acquire(mailbox).await.unwrap();
        assert!(g.fence() > last);
        last = g.fence();
        g.release().await;
    }
    let stored: u64 = conn.get(&fence_key).await.unwrap();
    assert_eq!(stored, last);
    let ttl: i64 = conn.ttl(&fence_key).await.unwrap();
    assert!(
        ttl > 29 * 24 * 3600,
        "the fence key has an idle expiry: {ttl}"
    );
    // Fences are at least Redis's clock in µs: about now.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(
        last.abs_diff(now_us) < 60_000_000,
        "fence {last} vs now {now_us}"
    );

    // Lose the counter (a restart without persistence, an eviction).
    let _: () = conn.del(&fence_key).await.unwrap();
    let g = locks.acquire(mailbox).await.unwrap();
    assert!(
        g.fence() > last,
        "after losing the fence key: {} <= {last}",
        g.fence()
    );
    last = g.fence();
    g.release().await;

    // A counter ahead of the clock (say, a burst) keeps counting.
    let ahead = last + 5_000_000_000;
    let _: () = conn.set(&fence_key, ahead).await.unwrap();
    let g = locks.acquire(mailbox).await.unwrap();
    assert_eq!(g.fence(), ahead + 1);
    g.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_the_lock_past_its_ttl() {
    let Some((url, mut conn)) = shared().await else {
        return;
    };
    let prefix = unique_prefix();
    let ttl = Duration::from_secs(1);
    let a = RedisLocks::new(&config(&url, &prefix, ttl)).unwrap();
    let b = RedisLocks::new(&config(&url, &prefix, ttl)).unwrap();
    let held = a.acquire("t/dave").await.unwrap();
    let lost = held.lost();
    tokio::time::sleep(ttl * 3).await;
    assert!(!*lost.borrow(), "renewed, not lost");
    let pttl: i64 = conn.pttl(a.lock_key("t/dave")).await.unwrap();
    assert!(pttl > 0, "key still there: {pttl}");
    assert!(matches!(b.acquire("t/dave").await, Err(LockError::InUse)));
    held.verify().await.unwrap();
    held.release().await;
    b.acquire("t/dave").await.unwrap().release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_wait_gets_a_mailbox_released_meanwhile() {
    let Some((url, _conn)) = shared().await else {
        return;
    };
    let prefix = unique_prefix();
    let holder = RedisLocks::new(&config(&url, &prefix, Duration::from_secs(30))).unwrap();
    let mut patient = config(&url, &prefix, Duration::from_secs(30));
    patient.wait = Duration::from_secs(3);
    let patient = RedisLocks::new(&patient).unwrap();
    let mut hasty = config(&url, &prefix, Duration::from_secs(30));
    hasty.wait = Duration::from_millis(200);
    let hasty = RedisLocks::new(&hasty).unwrap();

    let held = holder.acquire("t/hank").await.unwrap();
    assert!(matches!(
        hasty.acquire("t/hank").await,
        Err(LockError::InUse)
    ));
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release().await;
    });
    let got = patient
        .acquire("t/hank")
        .await
        .expect("acquired after the holder released");
    releaser.await.unwrap();
    got.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_latency() {
    // A measurement, printed (cargo test -- --nocapture), not asserted.
    let Some((url, _conn)) = shared().await else {
        return;
    };
    let prefix = unique_prefix();
    let locks = RedisLocks::new(&config(&url, &prefix, Duration::from_secs(30))).unwrap();
    locks.ping().await.unwrap();
    let mut acquire = Vec::new();
    let mut release = Vec::new();
    for i in 0..500 {
        let mailbox = format!("t/u{}", i % 50);
        let t = Instant::now();
        let g = locks.acquire(&mailbox).await.unwrap();
        acquire.push(t.elapsed());
        let t = Instant::now();
        g.release().await;
        release.push(t.elapsed());
    }
    acquire.sort();
    release.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    eprintln!(
        "redis lock latency over {} rounds: acquire p50 {:?} p99 {:?}; release p50 {:?} p99 {:?}",
        acquire.len(),
        pct(&acquire, 50),
        pct(&acquire, 99),
        pct(&release, 50),
        pct(&release, 99)
    );
}

// ---- private Redis servers ----

struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateRedis {
    /// Starts one, or `None` (skipped) without `redis-server`.
    async fn start(extra: &[&str]) -> Option<PrivateRedis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            skip("redis-server is not installed");
            return None;
        }
        let mut r = PrivateRedis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.restart().await;
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), async || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .await,
            "private redis-server did not start on port {port}"
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_and_a_restart_works_again() {
    let Some(mut server) = PrivateRedis::start(&[]).await else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let locks = RedisLocks::new(&config(&server.url(), "pg", ttl)).unwrap();
    let held = locks.acquire("t/ivan").await.unwrap();
    let mut lost = held.lost();

    server.stop();
    // Unreachable for longer than the ttl minus the margin: lost.
    let t = Instant::now();
    tokio::time::timeout(ttl * 3, lost.wait_for(|&l| l))
        .await
        .expect("lost while Redis is down")
        .unwrap();
    eprintln!(
        "lock reported lost {:?} after Redis stopped (ttl {ttl:?})",
        t.elapsed()
    );
    assert!(held.verify().await.is_err());

    // Login while Redis is down: Unavailable, quickly, never a lock.
    for _ in 0..3 {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), locks.acquire("t/judy"))
            .await
            .expect("acquire must not hang");
        assert!(
            matches!(r, Err(LockError::Unavailable(_))),
            "{:?}",
            r.as_ref().err()
        );
        eprintln!("acquire with Redis down failed after {:?}", t.elapsed());
    }
    assert!(locks.ping().await.is_err());
    held.release().await; // fails quietly; nothing to delete

    server.restart().await;
    let mut got = None;
    let recovered = wait_until(Duration::from_secs(10), async || {
        match locks.acquire("t/judy").await {
            Ok(g) => {
                got = Some(g);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(recovered, "locks work again after Redis is back");
    let g = got.unwrap();
    g.verify().await.unwrap();
    g.release().await;
    locks.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_session_loses_the_lock() {
    let Some(mut server) = PrivateRedis::start(&[]).await else {
        return;
    };
    let ttl = Duration::from_secs(3);
    let locks = RedisLocks::new(&config(&server.url(), "pg", ttl)).unwrap();
    let held = locks.acquire("t/kim").await.unwrap();
    let fence = held.fence();
    let mut lost = held.lost();
    // A restart without persistence forgets the lock (and the fence key).
    server.restart().await;
    tokio::time::timeout(ttl * 2, lost.wait_for(|&l| l))
        .await
        .expect("lost after the restart")
        .unwrap();
    assert!(held.verify().await.is_err());
    held.release().await;
    let mut next = None;
    assert!(
        wait_until(Duration::from_secs(10), async || {
            next = locks.acquire("t/kim").await.ok();
            next.is_some()
        })
        .await
    );
    let next = next.unwrap();
    assert!(
        next.fence() > fence,
        "the fence still grows after Redis lost its keys"
    );
    next.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_works() {
    let Some(server) = PrivateRedis::start(&["--requirepass", "s3cret"]).await else {
        return;
    };
    let good = format!("redis://:s3cret@127.0.0.1:{}", server.port);
    let locks = RedisLocks::new(&config(&good, "pg", Duration::from_secs(5))).unwrap();
    locks.acquire("t/leo").await.unwrap().release().await;

    let bad = format!("redis://:wrong@127.0.0.1:{}", server.port);
    let locks = RedisLocks::new(&config(&bad, "pg", Duration::from_secs(5))).unwrap();
    match locks.acquire("t/leo").await {
        Err(LockError::Unavailable(e)) => {
            assert!(!e.contains("wrong"), "no password in errors: {e}")
        }
        other => panic!("{:?}", other.err()),
    }
    let none = RedisLocks::new(&config(&server.url(), "pg", Duration::from_secs(5))).unwrap();
    assert!(matches!(
        none.acquire("t/leo").await,
        Err(LockError::Unavailable(_))
    ));
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl tool.
fn make_certs(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .ok()?;
    let ok = openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=popgate test CA",
        ],
    ) && openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    ok.then(|| {
        (
            dir.join("ca.crt"),
            dir.join("server.crt"),
            dir.join("server.key"),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let Some((ca, crt, key)) = make_certs(certs.path()) else {
        skip("the openssl tool could not make test certificates");
        return;
    };
    let tls_port = free_port().to_string();
    let (ca_s, crt_s, key_s) = (
        ca.display().to_string(),
        crt.display().to_string(),
        key.display().to_string(),
    );
    let Some(server) = PrivateRedis::start(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &crt_s,
        "--tls-key-file",
        &key_s,
        "--tls-ca-cert-file",
        &ca_s,
        "--tls-auth-clients",
        "no",
    ])
    .await
    else {
        return;
    };
    // A ttl of 10 s gives each call 2 s (the most): a TLS handshake in a debug build
    // on a loaded 2-core machine has taken more than the 1 s of a 5 s ttl.
    let mut c = config(
        &format!("rediss://127.0.0.1:{tls_port}"),
        "pg",
        Duration::from_secs(10),
    );
    c.tls_ca = Some(std::fs::read(&ca).unwrap());
    let locks = RedisLocks::new(&c).unwrap();
    let g = tokio::time::timeout(Duration::from_secs(10), locks.acquire("t/mia"))
        .await
        .unwrap()
        .expect("lock over TLS");
    g.verify().await.unwrap();
    g.release().await;

    // Without the CA the server is not trusted: Unavailable, not a lock.
    c.tls_ca = None;
    let untrusted = RedisLocks::new(&c).unwrap();
    assert!(matches!(
        untrusted.acquire("t/mia").await,
        Err(LockError::Unavailable(_))
    ));
    drop(server);
}
