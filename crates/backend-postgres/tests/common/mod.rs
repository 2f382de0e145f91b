//! A fresh schema per test in the shared test database, so tests run in
//! parallel: PostgreSQL on 127.0.0.1:5432, trust auth, database `test`
//! (override with POPGATE_TEST_PG_URL).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use backend_postgres::{PgConfig, PgStore};

pub fn base_url() -> String {
    std::env::var("POPGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub struct TestDb {
    pub config: PgConfig,
}

impl TestDb {
    /// A new, migrated schema.
    pub async fn new(label: &str) -> TestDb {
        let db = TestDb::unmigrated(label);
        backend_postgres::migrate(&db.config)
            .await
            .expect("migrating the test schema (is PostgreSQL on 127.0.0.1:5432?)");
        db
    }

    /// A schema name that nothing has used; not created.
    pub fn unmigrated(label: &str) -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let schema = format!(
            "t_{label}_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut config = PgConfig::new(base_url());
        config.schema = schema;
        TestDb { config }
    }

    pub fn store(&self) -> PgStore {
        PgStore::connect_lazy(&self.config).expect("pool")
    }

    /// Drops the schema (call at the end of a test that passed).
    pub async fn drop_schema(self) {
        let mut admin = PgConfig::new(base_url());
        admin.schema = "public".into();
        let pool = admin.pool().expect("pool");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.config.schema
        )))
        .execute(&pool)
        .await
        .expect("dropping the test schema");
        pool.close().await;
    }
}
