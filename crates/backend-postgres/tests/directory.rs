//! The PostgreSQL directory (`backend_postgres::PgDirectory`) against the
//! schema the migrations make.

mod common;

use backend_postgres::PgDirectory;
use common::TestDb;
use popgate_auth::scheme::{HashParams, Scheme, hash_with};
use popgate_auth::{Directory, Login};

fn login<'a>(local: &'a str, domain: &'a str) -> Login<'a> {
    Login::new(local, domain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_looked_up_per_tenant_and_can_be_managed() {
    let db = TestDb::new("dir").await;
    let pool = db.config.pool().unwrap();
    let acme = PgDirectory::new(pool.clone(), "acme");
    let globex = PgDirectory::new(pool.clone(), "globex");
    let fast = HashParams::INSECURE_FAST;
    // Schemes, wrong passwords, unknown and disabled users, LOGIN-DELAY
    // and outages are the kit's (directory_conformance.rs); this test is
    // the administration and the lookup rules of this backend.
    let pw = |p: &[u8]| hash_with(Scheme::Plain, p, &fast).unwrap();
    acme.add_user("plain@acme.example", &pw(b"pw of the user"), None, Some(2))
        .await
        .unwrap();
    let stored = pw(b"x");
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

/// The `location` column (Dovecot's userdb `mail`): what a login and a
/// delivery get (a disabled user's too), cleared back to the template,
/// shown by the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_location_reaches_logins_and_deliveries() {
    let db = TestDb::new("dirloc").await;
    let pool = db.config.pool().unwrap();
    let acme = PgDirectory::new(pool.clone(), "acme");
    let stored = hash_with(Scheme::Plain, b"pw", &HashParams::INSECURE_FAST).unwrap();
    acme.add_user("bob@acme.example", &stored, None, None)
        .await
        .unwrap();
    let bob = login("bob", "acme.example");
    let location = |info: Option<popgate_auth::UserInfo>| info.expect("bob").location;
    assert_eq!(location(acme.verify(bob, b"pw").await.unwrap()), None);
    let own = "maildir:/var/vmail/acme.example/bob-own/Maildir";
    acme.set_location("bob@acme.example", Some(own))
        .await
        .unwrap();
    assert_eq!(
        location(acme.verify(bob, b"pw").await.unwrap()).as_deref(),
        Some(own)
    );
    acme.set_enabled("bob@acme.example", false).await.unwrap();
    assert_eq!(
        location(acme.find_user(bob).await.unwrap()).as_deref(),
        Some(own),
        "a disabled user's mail still goes to its location"
    );
    let listed = acme.list_users().await.unwrap();
    assert_eq!(listed[0].location.as_deref(), Some(own));
    acme.set_location("bob@acme.example", None).await.unwrap();
    assert_eq!(location(acme.find_user(bob).await.unwrap()), None);
    assert!(matches!(
        acme.set_location("ghost@acme.example", Some(own)).await,
        Err(backend_postgres::UserAdminError::NotFound(_))
    ));
    pool.close().await;
    db.drop_schema().await;
}
