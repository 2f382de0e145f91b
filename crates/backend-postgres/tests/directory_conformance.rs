//! The PostgreSQL directory runs the directory conformance kit: the kit's
//! users added with the user-administration calls `popgate user` makes, in
//! a fresh schema of the test database.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_postgres::{PgConfig, PgDirectory};
use common::TestDb;
use popgate_auth::Directory;
use popgate_auth::conformance::{self, Fixture, KitUser};
use popgate_auth::hashing::Hashing;

struct Pg {
    db: TestDb,
}

#[async_trait]
impl Fixture for Pg {
    async fn directory(&mut self, users: &[KitUser], hashing: Hashing) -> Arc<dyn Directory> {
        let pool = self.db.config.pool().unwrap();
        let dir = PgDirectory::new(pool, "kit").with_hashing(hashing);
        for u in users {
            dir.add_user(&u.login, &u.stored, u.login_delay, None)
                .await
                .unwrap();
            dir.set_allow_nets(&u.login, u.allow_nets.as_deref())
                .await
                .unwrap();
            dir.set_enabled(&u.login, u.enabled).await.unwrap();
        }
        Arc::new(dir)
    }

    /// Nobody listens on port 1.
    async fn unreachable(&mut self, hashing: Hashing) -> Option<Arc<dyn Directory>> {
        let mut config = PgConfig::new("postgres://postgres@127.0.0.1:1/test");
        config.connect_timeout = Duration::from_millis(300);
        let dir = PgDirectory::new(config.pool().unwrap(), "kit").with_hashing(hashing);
        Some(Arc::new(dir))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_directory_passes_the_kit() {
    let mut pg = Pg {
        db: TestDb::new("dirkit").await,
    };
    conformance::run(&mut pg).await;
    pg.db.drop_schema().await;
}
