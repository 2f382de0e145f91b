//! Password hashing cannot be turned into a weapon: cost caps on stored
//! hashes, a deadline for a hashing slot, each tenant's share of the slots,
//! and failures that cost the same whether the login exists or not.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use directory_passwd_file::PasswdFile;
use popgate_auth::hashing::{HashPool, HashPoolConfig};
use popgate_auth::scheme::{self, CostLimits, HashParams, Scheme, SchemeError};
use popgate_auth::{Directory, Login};

/// Collects log output while `f` runs on this thread.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// A hash with the given parameters whose data is well-formed but matches
/// no password we try (verifying it costs the full price).
fn argon2_with(m: u32, t: u32, p: u32) -> String {
    format!(
        "{{ARGON2ID}}$argon2id$v=19$m={m},t={t},p={p}$JXUHjdgiKdKsBKMYU5rWQw$SCVqWqgYNPyo6+EjwdPu7UmRru+OvfFiU/VhAHhPjc4"
    )
}

fn pool(slots: usize, wait: Duration) -> Arc<HashPool> {
    HashPool::new(HashPoolConfig {
        slots,
        tenant_slots: None,
        wait,
        limits: CostLimits::DEFAULT,
        nice: HashPoolConfig::DEFAULT_NICE,
    })
}

#[test]
fn defaults_admit_dovecot_and_common_installs() {
    for stored in [
        // doveadm pw -s ARGON2ID / ARGON2I (Dovecot 2.3's libsodium defaults)
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$JXUHjdgiKdKsBKMYU5rWQw$SCVqWqgYNPyo6+EjwdPu7UmRru+OvfFiU/VhAHhPjc4",
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$bLuTOuw96tmnewmIQLjVLg$o/nYYwbVIS+Uf7vMjPpqUJftTs9ZAdvqvohSZdwa+jg",
        // PHP's password_hash(PASSWORD_ARGON2ID) and argon2-cffi's defaults
        &argon2_with(65536, 4, 1),
        &argon2_with(65536, 3, 4),
        "{BLF-CRYPT}$2y$05$V8gd8DOmgT7U9U2NY1s91.DtqA1jv..5X/UKdKoUaqncsrt5li2k6",
        "$2b$12$V8gd8DOmgT7U9U2NY1s91.DtqA1jv..5X/UKdKoUaqncsrt5li2k6",
        "{SHA512-CRYPT}$6$ueFzmnOeG/RAhqtL$vxD1/2uVZ1mzxXMs7Za8Vk71dEsCauVRWKI4CK2FDba74HefuR2x.B4Cr77JD0hA6wpgrvhVkKDvQJSEHNfiY1",
        // passlib's default for sha512_crypt
        "$6$rounds=656000$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
        "{PLAIN}secret",
    ] {
        scheme::check_cost(stored, &CostLimits::DEFAULT)
            .unwrap_or_else(|e| panic!("{stored}: {e}"));
    }
    // And what `popgate pw` writes.
    for s in Scheme::ALL {
        let stored = scheme::hash_with(s, b"x", &HashParams::PRODUCTION).unwrap();
        scheme::check_cost(&stored, &CostLimits::DEFAULT)
            .unwrap_or_else(|e| panic!("{stored}: {e}"));
    }
    // 64 MiB per slot: the default caps times the most default slots fit a
    // 1 GiB pod with room to spare.
    let most = u64::from(CostLimits::DEFAULT.argon2_max_memory_kib) * 1024 * 8;
    assert!(most <= 512 << 20, "{most}");
}

#[test]
fn each_cost_parameter_is_capped_and_named() {
    let l = CostLimits::DEFAULT;
    let cases = [
        (argon2_with(4 * 1024 * 1024, 1, 1), "argon2_max_memory = 65536 KiB", "m=4194304 KiB"),
        (argon2_with(65537, 1, 1), "argon2_max_memory", "m=65537"),
        (argon2_with(1024, 9, 1), "argon2_max_time = 8", "t=9"),
        (argon2_with(1024, 1, 9), "argon2_max_lanes = 8", "p=9"),
        (
            "$argon2i$v=19$m=1048576,t=1,p=1$bLuTOuw96tmnewmIQLjVLg$o/nYYwbVIS+Uf7vMjPpqUJftTs9ZAdvqvohSZdwa+jg".into(),
            "argon2_max_memory",
            "ARGON2I",
        ),
        (
            "{BLF-CRYPT}$2y$31$V8gd8DOmgT7U9U2NY1s91.DtqA1jv..5X/UKdKoUaqncsrt5li2k6".into(),
            "bcrypt_max_cost = 14",
            "cost 31",
        ),
        (
            "$2a$15$V8gd8DOmgT7U9U2NY1s91.DtqA1jv..5X/UKdKoUaqncsrt5li2k6".into(),
            "bcrypt_max_cost",
            "BLF-CRYPT",
        ),
        (
            "{SHA512-CRYPT}$6$rounds=999999999$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1".into(),
            "sha_crypt_max_rounds = 1000000",
            "rounds=999999999",
        ),
        (
            "$5$rounds=99999999999999999999999999$salt$x".into(),
            "sha_crypt_max_rounds",
            "SHA256-CRYPT",
        ),
    ];
    for (stored, cap, found) in cases {
        let started = Instant::now();
        let err = scheme::verify_within(&stored, b"secret", &l).expect_err(&stored);
        // Refused before hashing: m=4 GiB or bcrypt 2^31 would take ages.
        assert!(started.elapsed() < Duration::from_millis(50), "{stored}");
        assert!(
            matches!(err, SchemeError::AboveCap { .. }),
            "{stored}: {err}"
        );
        let text = err.to_string();
        assert!(text.contains(cap) && text.contains(found), "{text}");
        assert!(
            !text.contains("saltsalt") && !text.contains("V8gd8"),
            "{text}"
        );
        // scheme::verify uses the default caps.
        assert!(matches!(
            scheme::verify(&stored, b"secret"),
            Err(SchemeError::AboveCap { .. })
        ));
    }
    // Lower caps refuse what the defaults admit; the parameters at the cap pass.
    let tight = CostLimits {
        argon2_max_memory_kib: 32768,
        sha_crypt_max_rounds: 4999,
        ..l
    };
    let dovecot = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$JXUHjdgiKdKsBKMYU5rWQw$SCVqWqgYNPyo6+EjwdPu7UmRru+OvfFiU/VhAHhPjc4";
    assert!(scheme::verify_within(dovecot, b"secret", &l).unwrap());
    assert!(scheme::check_cost(dovecot, &tight).is_err());
    // No rounds= means 5000.
    assert!(scheme::check_cost("$6$salt$hash", &tight).is_err());
    assert!(scheme::check_cost(&argon2_with(32768, 8, 8), &tight).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_file_warns_at_load_and_refuses_like_a_wrong_password() {
    global_log();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.passwd");
    let fast = HashParams {
        argon2_m_kib: 4096,
        ..HashParams::INSECURE_FAST
    };
    let good = scheme::hash_with(Scheme::Argon2id, b"secret", &fast).unwrap();
    let huge = argon2_with(1024 * 1024, 1, 1);
    std::fs::write(
        &path,
        format!(
            "# users\nann@acme.example:{good}\nbea@acme.example:{good}\nhuge@acme.example:{huge}\nhuge2@acme.example:{huge}\nhuge3@acme.example:{huge}\n"
        ),
    )
    .unwrap();
    let hashing = pool(2, Duration::from_secs(5)).for_tenant("acme");
    let (file, logs) = logs_of(|| PasswdFile::open_with(&path, hashing).unwrap());
    // Each line above the cap is named with file, line, user and the cap.
    for line in ["line=4", "line=5", "line=6"] {
        assert!(logs.contains(line), "{line}: {logs}");
    }
    assert!(
        logs.contains("huge@acme.example")
            && logs.contains("argon2_max_memory = 65536 KiB")
            && logs.contains("m=1048576 KiB"),
        "{logs}"
    );
    assert!(!logs.contains("JXUHjdgi"), "{logs}");
    let warnings = file.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!("{}:4: huge@acme.example: ", path.display())),
        "{warnings:?}"
    );

    // The login fails like a wrong password: Ok(None), not an error; the
    // hash is not computed, the dummy (an ordinary user's class) is; the
    // refusal is logged once per user.
    let huge_login = Login::new("huge", "acme.example");
    let started = Instant::now();
    let refused = file.verify(huge_login, b"secret").await.unwrap();
    assert_eq!(refused, None);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        file.verify(Login::new("ann", "acme.example"), b"secret")
            .await
            .unwrap()
            .is_some()
    );
    for _ in 0..3 {
        assert_eq!(file.verify(huge_login, b"x").await.unwrap(), None);
    }
    // The refusal is logged on the blocking thread, so look at the global log.
    let log = global_log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("login refused: password hash above the cost cap"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(
        refusals[0].contains("huge@acme.example") && refusals[0].contains("argon2_max_memory"),
        "{log}"
    );
}

/// Everything logged on threads without a subscriber of their own.
fn global_log() -> String {
    static BUF: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    let buf = BUF.get_or_init(|| {
        #[derive(Clone)]
        struct W(Arc<Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = W(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    });
    String::from_utf8(buf.lock().unwrap().clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_a_slot_has_a_deadline() {
    let pool = pool(1, Duration::from_millis(100));
    let acme = pool.for_tenant("acme");
    let holder = {
        let acme = acme.clone();
        tokio::spawn(async move {
            acme.run(|| std::thread::sleep(Duration::from_millis(1500)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.available(), 0);
    let globex = pool.for_tenant("globex");
    let started = Instant::now();
    let err = globex.run(|| ()).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(90) && waited < Duration::from_millis(1000),
        "{waited:?}"
    );
    assert!(
        err.to_string()
            .contains("no password-hashing slot free within 100ms"),
        "{err}"
    );
    holder.await.unwrap().unwrap();
    // Free again: runs.
    globex.run(|| ()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_take_every_slot() {
    let pool = pool(2, Duration::from_secs(10));
    assert_eq!(pool.config().tenant_share(), 1);
    let flood = pool.for_tenant("flood");
    // Six slow checks of one tenant, queued before anyone else.
    let mut jobs = Vec::new();
    for _ in 0..6 {
        let flood = flood.clone();
        jobs.push(tokio::spawn(async move {
            flood
                .run(|| std::thread::sleep(Duration::from_millis(400)))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The flood holds one slot; the other tenant gets the other at once.
    assert_eq!(pool.available(), 1);
    let other = pool.for_tenant("other");
    let started = Instant::now();
    other.run(|| ()).await.unwrap();
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(200), "waited {waited:?}");
    // Two handles of one tenant share its share.
    let again = pool.for_tenant("flood");
    let started = Instant::now();
    again.run(|| ()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
    for j in jobs {
        j.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_bound_the_checks_running_at_once() {
    let pool = pool(3, Duration::from_secs(10));
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut jobs = Vec::new();
    for i in 0..12 {
        let hashing = pool.for_tenant(&format!("t{}", i % 4));
        let (running, most) = (running.clone(), most.clone());
        jobs.push(tokio::spawn(async move {
            hashing
                .run(move || {
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, SeqCst);
                })
                .await
        }));
    }
    for j in jobs {
        j.await.unwrap().unwrap();
    }
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn max_sessions_is_recognised_and_ignored_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    std::fs::write(
        &path,
        "a:{PLAIN}a::::::popgate_max_sessions=2\nb:{PLAIN}b::::::popgate_max_sessions=5 popgate_login_delay=7\nc:{PLAIN}c\n",
    )
    .unwrap();
    let (file, logs) = logs_of(|| PasswdFile::open(&path).unwrap());
    assert_eq!(file.user_count(), 3);
    assert_eq!(logs.matches("popgate_max_sessions").count(), 1, "{logs}");
    assert!(
        logs.contains("2 line(s)") && logs.contains("line=1"),
        "{logs}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = rt
        .block_on(file.verify(Login::new("b", ""), b"b"))
        .unwrap()
        .unwrap();
    assert_eq!(b.login_delay, Some(7));
}
