//! What the Redis tests share: where the shared Redis is, a key prefix of
//! a test's own, and a plain connection to look at the keys.

#![allow(dead_code)] // each test crate uses its own part

use std::time::Duration;

/// The shared Redis: `POPGATE_TEST_REDIS`, default `redis://127.0.0.1:6379`.
pub fn shared_url() -> String {
    std::env::var("POPGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `POPGATE_REQUIRE_REDIS=1`: a missing Redis fails the test instead of
/// skipping it (the project's test script sets it).
pub fn required() -> bool {
    std::env::var("POPGATE_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

/// `{tag}-{pid}-{random}`: no other test or run uses it.
pub fn unique_prefix(tag: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let r: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{tag}-{}-{r}", std::process::id())
}

/// A plain connection to `url`, or `None` when nothing answers within 2 s.
pub async fn connect(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()
}
