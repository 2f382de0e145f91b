//! `RedisLocks` and `RedisLimits` pass the lock seam's conformance kit,
//! against the shared Redis at `POPGATE_TEST_REDIS` (default
//! `redis://127.0.0.1:6379`), each run under a fresh key prefix. Two
//! instances on one prefix stand for two processes of a fleet.
//! Without a reachable Redis they fail.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_redis::{RedisLimits, RedisLocks, RedisLocksConfig};
use popgate_lock::MailboxLocks;
use popgate_lock::conformance::{self, LimitsBackend, LockBackend};
use popgate_lock::limits::{Limits, LimitsConfig};
use redis::AsyncCommands;

const TTL: Duration = Duration::from_secs(1);

mod common;

/// A raw connection to the shared Redis; without one the test fails.
async fn raw() -> redis::aio::MultiplexedConnection {
    let url = common::shared_url();
    common::connect(&url)
        .await
        .unwrap_or_else(|| panic!("no Redis answers at {url} (set POPGATE_TEST_REDIS)"))
}

/// Instances of the Redis backend on one fresh key prefix.
struct Fleet {
    config: RedisLocksConfig,
    conn: redis::aio::MultiplexedConnection,
}

impl Fleet {
    async fn new() -> Fleet {
        let conn = raw().await;
        let mut config = RedisLocksConfig::new(common::shared_url());
        config.key_prefix = common::unique_prefix("popgate-kit");
        // The shortest ttl, so that a lock taken away is noticed soon.
        config.ttl = TTL;
        Fleet { config, conn }
    }

    fn locks(&self) -> RedisLocks {
        RedisLocks::new(&self.config).unwrap()
    }

    /// Deletes every key the run made.
    async fn clean(mut self) {
        let keys: Vec<String> = self
            .conn
            .keys(format!("{}:*", self.config.key_prefix))
            .await
            .unwrap();
        for k in keys {
            let _: () = self.conn.del(&k).await.unwrap();
        }
    }
}

#[async_trait]
impl LockBackend for Fleet {
    fn instance(&self) -> Box<dyn MailboxLocks> {
        Box::new(self.locks())
    }

    fn shared(&self) -> bool {
        true
    }

    /// Deletes the lock key, as its expiry would.
    async fn take_away(&self, key: &str) -> bool {
        let mut conn = self.conn.clone();
        let _: () = conn.del(self.locks().lock_key(key)).await.unwrap();
        true
    }

    fn loss_noticed_within(&self) -> Duration {
        TTL * 2
    }
}

impl LimitsBackend for Fleet {
    fn instance(&self, config: LimitsConfig) -> Arc<dyn Limits> {
        RedisLimits::new(&self.locks(), config)
    }

    fn shared(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_locks_pass_the_conformance_kit() {
    let fleet = Fleet::new().await;
    conformance::run_locks(&fleet, "tenant-x").await;
    fleet.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limits_pass_the_conformance_kit() {
    let fleet = Fleet::new().await;
    conformance::run_limits(&fleet).await;
    // Let the dropped connections' entries go before cleaning up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fleet.clean().await;
}
