//! The fleet's session listings in Redis (`RedisFleet`): two replicas on the
//! shared Redis, under a key prefix of their own.

use std::time::Duration;

use backend_redis::{RedisFleet, RedisLocks, RedisLocksConfig};
use redis::AsyncCommands;

mod common;

use common::{connect, required, shared_url, unique_prefix};

fn replica(prefix: &str, name: &str, ttl: Duration) -> RedisFleet {
    let mut c = RedisLocksConfig::new(shared_url());
    c.key_prefix = prefix.into();
    RedisFleet::new(&RedisLocks::new(&c).unwrap(), name, ttl)
}

fn records(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn replicas_see_each_others_listings_and_kicks() {
    let Some(mut plain) = connect(&shared_url()).await else {
        assert!(!required(), "POPGATE_REQUIRE_REDIS=1 but no Redis answers");
        return;
    };
    let prefix = unique_prefix("fleet");
    let a = replica(&prefix, "aaaa0001", Duration::from_secs(30));
    let b = replica(&prefix, "bbbb0002", Duration::from_secs(30));
    a.publish(&records(&[
        ("aaaa0001-000001", "bob"),
        ("aaaa0001-000002", "dave"),
    ]))
    .await
    .unwrap();
    b.publish(&[]).await.unwrap();
    let mut seen = b.listings().await.unwrap();
    seen.sort();
    for (_, r) in &mut seen {
        r.sort();
    }
    assert_eq!(
        seen,
        vec![
            (
                "aaaa0001".to_string(),
                vec!["bob".to_string(), "dave".to_string()]
            ),
            ("bbbb0002".to_string(), vec![]),
        ]
    );
    // A publication replaces the replica's listing whole.
    a.publish(&records(&[("aaaa0001-000002", "dave")]))
        .await
        .unwrap();
    let seen = b.listings().await.unwrap();
    let of_a = seen.iter().find(|(r, _)| r == "aaaa0001").unwrap();
    assert_eq!(of_a.1, vec!["dave".to_string()]);

    // Kicks reach the replica they are meant for, once.
    b.request_kick("aaaa0001", &["aaaa0001-000002".into()])
        .await
        .unwrap();
    assert_eq!(b.take_kicks().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        a.take_kicks().await.unwrap(),
        vec!["aaaa0001-000002".to_string()]
    );
    assert_eq!(a.take_kicks().await.unwrap(), Vec::<String>::new());

    // Every key is under the prefix, in one Cluster slot ({fleet}), and
    // expires: a dead replica leaves nothing behind for long.
    let keys: Vec<String> = plain.keys(format!("{prefix}:*")).await.unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(k.starts_with(&format!("{prefix}:{{fleet}}:")), "{k}");
        let ttl: i64 = plain.pttl(k).await.unwrap();
        assert!(ttl > 0, "{k} has no expiry");
        let _: () = plain.del(k).await.unwrap();
    }
}

#[tokio::test]
async fn a_replica_that_stops_publishing_drops_out() {
    if connect(&shared_url()).await.is_none() {
        assert!(!required(), "POPGATE_REQUIRE_REDIS=1 but no Redis answers");
        return;
    }
    let prefix = unique_prefix("fleet");
    let gone = replica(&prefix, "dead0001", Duration::from_millis(300));
    let alive = replica(&prefix, "a11e0002", Duration::from_secs(30));
    gone.publish(&records(&[("dead0001-000001", "bob")]))
        .await
        .unwrap();
    alive.publish(&[]).await.unwrap();
    assert_eq!(alive.listings().await.unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let seen = alive.listings().await.unwrap();
    assert_eq!(seen, vec![("a11e0002".to_string(), vec![])]);
}
