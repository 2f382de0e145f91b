//! The SQL directory against the shared PostgreSQL (127.0.0.1:5432, trust,
//! database `test`; POPGATE_TEST_PG_URL overrides), in a schema of its own
//! with a Postfix Admin `mailbox` table (its pgsql shape: `active` is a
//! boolean): the directory kit, and logins shaped like SQL injection.

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use common::{KIT_QUERY, MAILBOX_POSTGRES};
use popgate_auth::conformance::{self, Fixture, KitUser};
use popgate_auth::{Directory, Hashing, Login};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

fn base_url() -> String {
    std::env::var("POPGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The test's schema: created with the table, dropped at the end.
struct Schema {
    name: String,
}

impl Schema {
    async fn new() -> Schema {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("t_sqldir_{}_{nanos}", std::process::id());
        let pool = PgPool::connect(&base_url())
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (POPGATE_TEST_PG_URL)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let schema = Schema { name };
        sqlx::query(MAILBOX_POSTGRES)
            .execute(&schema.pool().await)
            .await
            .unwrap();
        schema
    }

    /// The URL whose connections see only this schema.
    fn url(&self) -> String {
        let sep = if base_url().contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", base_url(), self.name)
    }

    async fn pool(&self) -> PgPool {
        let options = PgConnectOptions::from_str(&self.url()).unwrap();
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap()
    }

    async fn drop(self) {
        let pool = PgPool::connect(&base_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
}

struct Pg<'a> {
    schema: &'a Schema,
}

#[async_trait]
impl Fixture for Pg<'_> {
    async fn directory(&mut self, users: &[KitUser], hashing: Hashing) -> Arc<dyn Directory> {
        let pool = self.schema.pool().await;
        for row in common::mailbox_rows(users) {
            sqlx::query(
                "INSERT INTO mailbox (username, password, local_part, domain, active, \
                 allow_nets, login_delay) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(row.username)
            .bind(row.password)
            .bind(row.local_part)
            .bind(row.domain)
            .bind(row.active)
            .bind(row.allow_nets)
            .bind(row.login_delay)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
        Arc::new(common::directory(&self.schema.url(), KIT_QUERY, hashing))
    }

    async fn unreachable(&mut self, hashing: Hashing) -> Option<Arc<dyn Directory>> {
        Some(Arc::new(common::unreachable("postgres", hashing)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_kit_and_binds_the_login() {
    let schema = Schema::new().await;
    conformance::run(&mut Pg { schema: &schema }).await;

    let dir = common::directory(
        &schema.url(),
        "SELECT password, active AS enabled FROM mailbox WHERE local_part = $local AND domain = $domain",
        Hashing::standalone(),
    );
    let known = "right pw of known";
    assert!(
        dir.verify(Login::new("known", conformance::DOMAIN), known.as_bytes())
            .await
            .unwrap()
            .is_some()
    );
    for (local, domain) in [
        ("' OR '1'='1", conformance::DOMAIN),
        ("known", "kit.example' OR '1'='1"),
        ("a@b'--", ""),
        ("known'; DROP TABLE mailbox; --", conformance::DOMAIN),
    ] {
        let login = Login::new(local, domain);
        assert_eq!(
            dir.verify(login, known.as_bytes()).await.unwrap(),
            None,
            "{local:?}"
        );
        assert!(dir.find_user(login).await.unwrap().is_none(), "{local:?}");
    }
    let pool = schema.pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM mailbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(rows > 5, "the table is intact ({rows} rows)");
    pool.close().await;
    schema.drop().await;
}
