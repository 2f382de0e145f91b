//! The PostgreSQL directory's allow_nets and cost caps, against the schema
//! the migrations make, in a fresh schema of the test database
//! (PostgreSQL on 127.0.0.1:5432, trust auth, database `test`; override
//! with POPGATE_TEST_PG_URL).

use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backend_postgres::{PgDirectory, UserAdminError};
use popgate_auth::hashing::{HashPool, HashPoolConfig};
use popgate_auth::scheme::{self, CostLimits, HashParams, Scheme};
use popgate_auth::{Directory, Login, UserInfo};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

fn base_url() -> String {
    std::env::var("POPGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A new schema with the migrations applied, and a pool that uses it.
async fn migrated(label: &str) -> (PgPool, String) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let schema = format!("t_auth_{label}_{}_{nanos}", std::process::id());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&base_url())
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (POPGATE_TEST_PG_URL)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let options = PgConnectOptions::from_str(&base_url())
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    MIGRATOR.run(&pool).await.expect("migrations");
    (pool, schema)
}

async fn drop_schema(pool: PgPool, schema: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_nets_admits_only_its_networks() {
    let (pool, schema) = migrated("nets").await;
    let hashing = HashPool::new(HashPoolConfig::default()).for_tenant("acme");
    let acme = PgDirectory::new(pool.clone(), "acme").with_hashing(hashing);
    let fast = HashParams::INSECURE_FAST;
    let stored = scheme::hash_with(Scheme::Argon2id, b"pw", &fast).unwrap();
    acme.add_user("net@acme.example", &stored, None, None)
        .await
        .unwrap();
    acme.add_user("free@acme.example", &stored, Some(30), Some(2))
        .await
        .unwrap();
    acme.set_allow_nets("net@acme.example", Some("10.0.0.0/8, ::1,2001:db8::/32"))
        .await
        .unwrap();
    // Admission by address is the kit's (directory_conformance.rs): here,
    // the administration of the column and rows written by hand.
    let net = Login::new("net", "acme.example");
    assert!(
        acme.verify(net.with_client(ip("10.1.2.3")), b"pw")
            .await
            .unwrap()
            .is_some()
    );
    // NULL: from anywhere. The unused max_sessions column does not show.
    let free = Login::new("free", "acme.example").with_client(ip("203.0.113.1"));
    assert_eq!(
        acme.verify(free, b"pw").await.unwrap(),
        Some(UserInfo {
            login_delay: Some(30),
            mailbox: None,
            location: None,
        })
    );
    // Invalid lists are refused; clearing works.
    let err = acme
        .set_allow_nets("net@acme.example", Some("10.0.0.0/8,not-a-net"))
        .await
        .unwrap_err();
    assert!(matches!(err, UserAdminError::InvalidNets(_)), "{err}");
    assert!(err.to_string().contains("not-a-net"), "{err}");
    assert!(matches!(
        acme.set_allow_nets("nobody@acme.example", None).await,
        Err(UserAdminError::NotFound(_))
    ));
    acme.set_allow_nets("net@acme.example", None).await.unwrap();
    assert!(
        acme.verify(net.with_client(ip("127.0.0.1")), b"pw")
            .await
            .unwrap()
            .is_some()
    );
    // A row written by hand with a bad entry: that entry matches nothing.
    sqlx::query(
        "UPDATE users SET allow_nets = 'bogus,192.0.2.0/24' WHERE login = 'net@acme.example'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(
        acme.verify(net.with_client(ip("192.0.2.1")), b"pw")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        acme.verify(net.with_client(ip("127.0.0.1")), b"pw")
            .await
            .unwrap()
            .is_none()
    );
    drop_schema(pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_above_the_caps_fail_like_wrong_passwords_unhashed() {
    let (pool, schema) = migrated("caps").await;
    let limits = CostLimits {
        bcrypt_max_cost: 6,
        ..CostLimits::DEFAULT
    };
    let hashing = HashPool::new(HashPoolConfig {
        limits,
        ..HashPoolConfig::default()
    })
    .for_tenant("acme");
    let acme = PgDirectory::new(pool.clone(), "acme").with_hashing(hashing);
    let fast = HashParams::INSECURE_FAST;
    // Most users are above the cap (bcrypt 12): the dummy must still be
    // one that is hashed, the ordinary SHA512-CRYPT user's.
    let costly = scheme::hash_with(
        Scheme::BlfCrypt,
        b"pw",
        &HashParams {
            bcrypt_cost: 12,
            ..fast
        },
    )
    .unwrap();
    for i in 0..3 {
        acme.add_user(&format!("costly{i}@acme.example"), &costly, None, None)
            .await
            .unwrap();
    }
    let sha = scheme::hash_with(Scheme::Sha512Crypt, b"pw", &fast).unwrap();
    acme.add_user("sha@acme.example", &sha, None, None)
        .await
        .unwrap();
    // bcrypt cost 31 would never finish if it were hashed.
    let absurd = "{BLF-CRYPT}$2y$31$V8gd8DOmgT7U9U2NY1s91.DtqA1jv..5X/UKdKoUaqncsrt5li2k6";
    acme.add_user("absurd@acme.example", absurd, None, None)
        .await
        .unwrap();
    for user in ["costly0", "absurd"] {
        let started = Instant::now();
        let who = Login::new(user, "acme.example");
        assert_eq!(acme.verify(who, b"pw").await.unwrap(), None, "{user}");
        assert!(started.elapsed() < Duration::from_secs(2), "{user}");
    }
    assert!(
        acme.verify(Login::new("sha", "acme.example"), b"pw")
            .await
            .unwrap()
            .is_some()
    );
    // Unknown logins (what an unknown domain costs) work on this directory.
    acme.verify_unknown(b"pw").await.unwrap();
    drop_schema(pool, &schema).await;
}
