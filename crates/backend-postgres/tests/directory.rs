//! The PostgreSQL directory (`backend_postgres::PgDirectory`) against the
//! schema the migrations make.

mod common;

use backend_postgres::PgDirectory;
use common::TestDb;
use popgate_auth::scheme::{HashParams, Scheme, hash_with};
use popgate_auth::{Directory, Login, UserInfo};

fn login<'a>(local: &'a str, domain: &'a str) -> Login<'a> {
    Login::new(local, domain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_verify_in_every_scheme_and_can_be_managed() {
    let db = TestDb::new("dir").await;
    let pool = db.config.pool().unwrap();
    let acme = PgDirectory::new(pool.clone(), "acme");
    let globex = PgDirectory::new(pool.clone(), "globex");
    let fast = HashParams::INSECURE_FAST;
    for (user, scheme) in [
        ("argon@acme.example", Scheme::Argon2id),
        ("blf@acme.example", Scheme::BlfCrypt),
        ("sha@acme.example", Scheme::Sha512Crypt),
        ("plain@acme.example", Scheme::Plain),
    ] {
        let stored = hash_with(scheme, b"pw of the user", &fast).unwrap();
        acme.add_user(user, &stored, None, None).await.unwrap();
        let local = user.split('@').next().unwrap();
        assert!(
            acme.verify(login(local, "acme.example"), b"pw of the user")
                .await
                .unwrap()
                .is_some(),
            "{scheme}"
        );
        assert!(
            acme.verify(login(local, "acme.example"), b"wrong")
                .await
                .unwrap()
                .is_none()
        );
    }
    // Per-user overrides.
    let stored = hash_with(Scheme::Plain, b"x", &fast).unwrap();
    acme.add_user("slow@acme.example", &stored, Some(300), Some(2))
        .await
        .unwrap();
    assert_eq!(
        acme.verify(login("slow", "acme.example"), b"x")
            .await
            .unwrap(),
        Some(UserInfo {
            login_delay: Some(300)
        })
    );
    // A bare name serves every domain of the tenant; the full login wins.
    acme.add_user(
        "frank",
        &hash_with(Scheme::Plain, b"bare", &fast).unwrap(),
        None,
        None,
    )
    .await
    .unwrap();
    assert!(
        acme.verify(login("frank", "acme.test"), b"bare")
            .await
            .unwrap()
            .is_some()
    );
    acme.add_user(
        "frank@acme.test",
        &hash_with(Scheme::Plain, b"full", &fast).unwrap(),
        None,
        None,
    )
    .await
    .unwrap();
    assert!(
        acme.verify(login("frank", "acme.test"), b"bare")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        acme.verify(login("frank", "acme.test"), b"full")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        acme.verify(login("frank", "acme.example"), b"bare")
            .await
            .unwrap()
            .is_some()
    );
    // Tenants do not see each other's users.
    assert!(
        globex
            .verify(login("plain", "acme.example"), b"pw of the user")
            .await
            .unwrap()
            .is_none()
    );
    // Unknown users fail like wrong passwords.
    assert!(
        acme.verify(login("nobody", "acme.example"), b"x")
            .await
            .unwrap()
            .is_none()
    );
    // add, passwd, disable, enable.
    assert!(matches!(
        acme.add_user("plain@acme.example", &stored, None, None)
            .await,
        Err(backend_postgres::UserAdminError::Exists(_))
    ));
    acme.set_password(
        "plain@acme.example",
        &hash_with(Scheme::Sha512Crypt, b"new", &fast).unwrap(),
    )
    .await
    .unwrap();
    assert!(
        acme.verify(login("plain", "acme.example"), b"pw of the user")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        acme.verify(login("plain", "acme.example"), b"new")
            .await
            .unwrap()
            .is_some()
    );
    acme.set_enabled("plain@acme.example", false).await.unwrap();
    assert!(
        acme.verify(login("plain", "acme.example"), b"new")
            .await
            .unwrap()
            .is_none()
    );
    acme.set_enabled("plain@acme.example", true).await.unwrap();
    assert!(
        acme.verify(login("plain", "acme.example"), b"new")
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        acme.set_enabled("ghost@acme.example", false).await,
        Err(backend_postgres::UserAdminError::NotFound(_))
    ));
    acme.ping().await.unwrap();
    pool.close().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_directory_is_an_error_not_a_refusal() {
    let mut config = backend_postgres::PgConfig::new("postgres://postgres@127.0.0.1:1/test");
    config.connect_timeout = std::time::Duration::from_millis(300);
    let dir = PgDirectory::new(config.pool().unwrap(), "acme");
    assert!(
        dir.verify(login("bob", "acme.example"), b"x")
            .await
            .is_err()
    );
    assert!(dir.ping().await.is_err());
}
