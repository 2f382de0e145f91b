//! The SQL directory against a real MariaDB of the test's own (started on
//! a free port with a temporary data directory, stopped at the end) with a
//! Postfix Admin `mailbox` table: the directory kit, Postfix Admin's own
//! Dovecot query, and the rules of operator-written queries.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{KIT_QUERY, MAILBOX_MYSQL, MariaDb};
use directory_sql::{SqlConfig, SqlDirectory};
use popgate_auth::conformance::{self, Fixture, KitUser};
use popgate_auth::scheme::{self, HashParams, Scheme};
use popgate_auth::{Directory, Hashing, ListError, Login, UserInfo};
use sqlx::MySqlPool;

/// A fresh database with the `mailbox` table.
async fn postfix_db(server: &MariaDb, name: &str) -> MySqlPool {
    let admin = MySqlPool::connect(&server.url("mysql")).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let pool = MySqlPool::connect(&server.url(name)).await.unwrap();
    sqlx::query(MAILBOX_MYSQL).execute(&pool).await.unwrap();
    pool
}

async fn insert(pool: &MySqlPool, users: &[KitUser]) {
    for row in common::mailbox_rows(users) {
        sqlx::query(
            "INSERT INTO mailbox (username, password, local_part, domain, active, allow_nets, \
             login_delay) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(row.username)
        .bind(row.password)
        .bind(row.local_part)
        .bind(row.domain)
        .bind(row.active)
        .bind(row.allow_nets)
        .bind(row.login_delay)
        .execute(pool)
        .await
        .unwrap();
    }
}

struct Maria<'a> {
    server: &'a MariaDb,
}

#[async_trait]
impl Fixture for Maria<'_> {
    async fn directory(&mut self, users: &[KitUser], hashing: Hashing) -> Arc<dyn Directory> {
        let pool = postfix_db(self.server, "kit").await;
        insert(&pool, users).await;
        pool.close().await;
        Arc::new(common::directory(
            &self.server.url("kit"),
            KIT_QUERY,
            hashing,
        ))
    }

    async fn unreachable(&mut self, hashing: Hashing) -> Option<Arc<dyn Directory>> {
        Some(Arc::new(common::unreachable("mysql", hashing)))
    }
}

fn user(local: &str, password: &str, scheme: Scheme) -> KitUser {
    KitUser {
        login: format!("{local}@acme.example"),
        password: password.into(),
        stored: scheme::hash_with(scheme, password.as_bytes(), &HashParams::INSECURE_FAST).unwrap(),
        enabled: true,
        allow_nets: None,
        login_delay: None,
    }
}

fn acme(local: &str) -> Login<'_> {
    Login::new(local, "acme.example")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_passes_the_kit_and_keeps_the_query_rules() {
    let server = MariaDb::start();
    conformance::run(&mut Maria { server: &server }).await;

    let pool = postfix_db(&server, "postfix").await;
    let mut off = user("off", "off pw", Scheme::Sha512Crypt);
    off.enabled = false;
    insert(
        &pool,
        &[
            user("bob", "bob pw", Scheme::BlfCrypt),
            user("carol", "carol pw", Scheme::Sha512Crypt),
            off,
        ],
    )
    .await;
    let url = server.url("postfix");

    postfix_admin_query_pastes_in(&url).await;
    injection_shaped_logins_are_data(&url, &pool).await;
    more_than_one_row_is_refused(&url).await;
    bare_hashes_take_default_scheme(&url, &pool).await;
    a_query_without_password_column_is_an_error(&url).await;
    a_slow_query_is_cut_off(&url).await;
    nologin_column_disables(&url).await;
    iterate_query_lists_every_user(&url).await;
    pool.close().await;
}

/// Postfix Admin's `dovecot-sql.conf.ext`, as is: disabled users get no
/// row, so `user_query` makes them exist for delivery.
async fn postfix_admin_query_pastes_in(url: &str) {
    let q = "SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active = '1'";
    let dir = common::directory(url, q, Hashing::standalone());
    assert_eq!(
        dir.verify(acme("bob"), b"bob pw").await.unwrap(),
        Some(UserInfo::default())
    );
    assert_eq!(dir.verify(acme("bob"), b"bob pwx").await.unwrap(), None);
    assert_eq!(dir.verify(acme("off"), b"off pw").await.unwrap(), None);
    assert!(dir.find_user(acme("off")).await.unwrap().is_none());
    let mut config = SqlConfig::new(url, q);
    config.user_query = Some("SELECT maildir FROM mailbox WHERE username = '%u'".into());
    let dir = SqlDirectory::connect_lazy(&config, "acme", Hashing::standalone()).unwrap();
    assert!(dir.find_user(acme("off")).await.unwrap().is_some());
    assert!(dir.find_user(acme("nobody")).await.unwrap().is_none());
    dir.ping().await.unwrap();
}

/// The login is bound, never spliced: SQL in it is a name nobody has.
async fn injection_shaped_logins_are_data(url: &str, pool: &MySqlPool) {
    for q in [
        KIT_QUERY,
        "SELECT password FROM mailbox WHERE local_part = $local AND domain = $domain",
    ] {
        let dir = common::directory(url, q, Hashing::standalone());
        for (local, domain) in [
            ("' OR '1'='1", "acme.example"),
            ("x' OR 1=1 -- ", "acme.example"),
            ("bob", "acme.example' -- "),
            ("a@b'--", ""),
            ("x'; DROP TABLE mailbox; --", "acme.example"),
            ("bob\\", "acme.example"),
        ] {
            let login = Login::new(local, domain);
            assert_eq!(
                dir.verify(login, b"bob pw").await.unwrap(),
                None,
                "{local:?}@{domain:?}"
            );
            assert!(
                dir.find_user(login).await.unwrap().is_none(),
                "{local:?}@{domain:?}"
            );
        }
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mailbox")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rows, 3, "the table is intact");
}

async fn more_than_one_row_is_refused(url: &str) {
    // Every user of the domain: the query does not say which one logs in.
    let q = "SELECT password FROM mailbox WHERE domain = $domain ORDER BY username";
    let dir = common::directory(url, q, Hashing::standalone());
    assert_eq!(dir.verify(acme("bob"), b"bob pw").await.unwrap(), None);
    assert_eq!(dir.verify(acme("carol"), b"carol pw").await.unwrap(), None);
}

async fn bare_hashes_take_default_scheme(url: &str, pool: &MySqlPool) {
    sqlx::query(
        "INSERT INTO mailbox (username, password, local_part, domain) \
         VALUES ('plain@acme.example', 'bare secret', 'plain', 'acme.example')",
    )
    .execute(pool)
    .await
    .unwrap();
    let crypt = common::directory(url, KIT_QUERY, Hashing::standalone());
    assert_eq!(
        crypt.verify(acme("plain"), b"bare secret").await.unwrap(),
        None,
        "CRYPT by default"
    );
    let mut config = SqlConfig::new(url, KIT_QUERY);
    config.default_scheme = Scheme::Plain;
    let plain = SqlDirectory::connect_lazy(&config, "acme", Hashing::standalone()).unwrap();
    assert!(
        plain
            .verify(acme("plain"), b"bare secret")
            .await
            .unwrap()
            .is_some()
    );
    // A {SCHEME} prefix still wins over the default.
    assert!(
        plain
            .verify(acme("bob"), b"bob pw")
            .await
            .unwrap()
            .is_some()
    );
    sqlx::query("DELETE FROM mailbox WHERE username = 'plain@acme.example'")
        .execute(pool)
        .await
        .unwrap();
}

async fn a_query_without_password_column_is_an_error(url: &str) {
    let q = "SELECT username, active FROM mailbox WHERE username = $user";
    let dir = common::directory(url, q, Hashing::standalone());
    let err = dir.verify(acme("bob"), b"bob pw").await.unwrap_err();
    assert!(err.to_string().contains("`password` column"), "{err}");
}

async fn a_slow_query_is_cut_off(url: &str) {
    let q = "SELECT password, SLEEP(5) AS z FROM mailbox WHERE username = $user";
    let mut config = SqlConfig::new(url, q);
    config.query_timeout = Duration::from_millis(500);
    let dir = SqlDirectory::connect_lazy(&config, "acme", Hashing::standalone()).unwrap();
    let started = Instant::now();
    let err = dir.verify(acme("bob"), b"bob pw").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("no answer within"), "{err}");
}

async fn nologin_column_disables(url: &str) {
    let q =
        "SELECT password, IF(active = 1, 'N', 'Y') AS nologin FROM mailbox WHERE username = '%u'";
    let dir = common::directory(url, q, Hashing::standalone());
    assert!(dir.verify(acme("bob"), b"bob pw").await.unwrap().is_some());
    assert_eq!(dir.verify(acme("off"), b"off pw").await.unwrap(), None);
    assert!(dir.find_user(acme("off")).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_an_error_in_bounded_time() {
    let mut server = MariaDb::start();
    let pool = postfix_db(&server, "postfix").await;
    insert(&pool, &[user("bob", "bob pw", Scheme::Plain)]).await;
    pool.close().await;
    let dir = common::directory(&server.url("postfix"), KIT_QUERY, Hashing::standalone());
    assert!(dir.verify(acme("bob"), b"bob pw").await.unwrap().is_some());
    server.stop();
    let started = Instant::now();
    assert!(dir.verify(acme("bob"), b"bob pw").await.is_err());
    assert!(dir.ping().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Dovecot's two forms of `iterate_query` (`user`, or `username` and
/// `domain`), NULL rows skipped, logins lower case and sorted; a query
/// without a login column, one that fails, and none at all say so, naming
/// `iterate_query`.
async fn iterate_query_lists_every_user(url: &str) {
    let listing = |iterate: Option<&str>| {
        let mut config = SqlConfig::new(url, KIT_QUERY);
        config.iterate_query = iterate.map(str::to_owned);
        let dir = SqlDirectory::connect_lazy(&config, "t", Hashing::standalone()).unwrap();
        async move { dir.list_logins().await }
    };
    let all = ["bob@acme.example", "carol@acme.example", "off@acme.example"];
    let got = listing(Some(
        "SELECT local_part AS username, domain FROM mailbox ORDER BY username DESC",
    ))
    .await
    .unwrap();
    assert_eq!(got, all);
    let got = listing(Some(
        "SELECT UPPER(username) AS user FROM mailbox UNION ALL SELECT NULL",
    ))
    .await
    .unwrap();
    assert_eq!(got, all);
    let e = listing(Some("SELECT password FROM mailbox"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ListError::Unavailable(_))
            && e.to_string().contains("iterate_query")
            && e.to_string().contains("neither a `user` column"),
        "{e}"
    );
    let e = listing(Some("SELECT username AS user FROM no_such_table"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("iterate_query") && e.to_string().contains("no_such_table"),
        "{e}"
    );
    let e = listing(None).await.unwrap_err();
    assert!(
        matches!(&e, ListError::Unsupported(why) if why.contains("iterate_query")),
        "{e}"
    );
}
