//! Commits fenced by conditional writes, against SeaweedFS, a real S3 server
//! whose conditional writes are atomic (s3s-fs checks conditions without a
//! lock, so races on it prove nothing).
//!
//! One SeaweedFS for the whole file: it takes seconds to start.

mod common;

use std::sync::Arc;

use common::BUCKET;
use common::seaweed::Seaweed;
use popgate_store::conformance::{self, Capabilities};
use popgate_store::{MailStore, MailboxId, MessageStream, StoreError};
use store_s3::{ConditionalWrites, S3Store};

fn mailbox(local: &str) -> MailboxId {
    MailboxId::new("t", local, "s3.example")
}

fn stream(bytes: &[u8]) -> MessageStream {
    Box::pin(std::io::Cursor::new(bytes.to_vec()))
}

async fn fence_of(sw: &Seaweed, local: &str) -> u64 {
    let out = sw
        .client()
        .get_object()
        .bucket(BUCKET)
        .key(format!("s3.example/{local}/.popgate/fence"))
        .send()
        .await
        .expect("a fence object");
    let body = out.body.collect().await.unwrap().to_vec();
    String::from_utf8(body).unwrap().trim().parse().unwrap()
}

async fn count(sw: &Seaweed, local: &str) -> usize {
    let out = sw
        .client()
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(format!("s3.example/{local}/"))
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter(|o| !o.key().unwrap_or("").contains("/.popgate/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_fences_commits_by_compare_and_swap() {
    let sw = Seaweed::start().await;
    let mut config = sw.config();
    // "on" fails every open if the server ignored the conditions.
    config.conditional_writes = ConditionalWrites::On;
    let store = Arc::new(S3Store::new(config).unwrap());

    // The kit, on a real distributed S3 with conditional writes on.
    conformance::run(&*store, "t", Capabilities { fencing: true }).await;

    // A session claims the mailbox when it opens it: an older holder is
    // refused at once, not only after the newer one commits.
    for i in 0..3 {
        store
            .append(
                &mailbox("bob"),
                stream(format!("Subject: {i}\n\nx\n").as_bytes()),
            )
            .await
            .unwrap();
    }
    let mut old = store.open(&mailbox("bob")).await.unwrap();
    old.claim(100).await.unwrap();
    let mut new = store.open(&mailbox("bob")).await.unwrap();
    new.claim(200).await.unwrap();
    assert_eq!(fence_of(&sw, "bob").await, 200);
    assert!(matches!(old.claim(150).await, Err(StoreError::Fenced(150))));
    assert!(
        matches!(
            old.expunge(&[0, 1], 100).await,
            Err(StoreError::Fenced(100))
        ),
        "the stale holder's commit is refused before the new session committed"
    );
    assert_eq!(
        count(&sw, "bob").await,
        3,
        "the stale holder deleted nothing"
    );
    let report = new.expunge(&[0], 200).await.unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(count(&sw, "bob").await, 2);

    // Open reads the fence for the claim that follows; another session's
    // claim in between makes that read stale. The stale claim's
    // compare-and-swap then fails and reads again: an older token is
    // refused, a newer one wins.
    let mut a = store.open(&mailbox("bob")).await.unwrap();
    let mut b = store.open(&mailbox("bob")).await.unwrap();
    b.claim(300).await.unwrap();
    assert!(matches!(a.claim(250).await, Err(StoreError::Fenced(250))));
    assert_eq!(fence_of(&sw, "bob").await, 300);
    let mut c = store.open(&mailbox("bob")).await.unwrap();
    let mut d = store.open(&mailbox("bob")).await.unwrap();
    d.claim(400).await.unwrap();
    c.claim(500).await.unwrap();
    assert_eq!(fence_of(&sw, "bob").await, 500, "no lost update");
    assert!(matches!(
        d.expunge(&[0], 400).await,
        Err(StoreError::Fenced(400))
    ));
    assert_eq!(count(&sw, "bob").await, 2);

    // A message overwritten since the snapshot is another message: kept.
    for i in 0..2 {
        store
            .append(
                &mailbox("carol"),
                stream(format!("Subject: c{i}\n\nx\n").as_bytes()),
            )
            .await
            .unwrap();
    }
    let mut s = store.open(&mailbox("carol")).await.unwrap();
    s.claim(300).await.unwrap();
    let keys: Vec<String> = {
        let out = sw
            .client()
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix("s3.example/carol/")
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .filter(|k| !k.contains("/.popgate/"))
            .collect()
    };
    let first = s.messages()[0].uidl.clone();
    let overwritten = keys.iter().find(|k| k.ends_with(&first)).unwrap().clone();
    sw.client()
        .put_object()
        .bucket(BUCKET)
        .key(&overwritten)
        .body(b"Subject: rewritten\n\nnew\n".to_vec().into())
        .send()
        .await
        .unwrap();
    let report = s.expunge(&[0, 1], 300).await.unwrap();
    assert_eq!((report.deleted, report.already_gone), (1, 1));
    let left = sw
        .client()
        .get_object()
        .bucket(BUCKET)
        .key(&overwritten)
        .send()
        .await
        .expect("the overwritten message is kept");
    assert_eq!(
        left.body.collect().await.unwrap().to_vec(),
        b"Subject: rewritten\n\nnew\n"
    );

    // Claims racing on one mailbox: the fence ends at the highest token
    // (a read-then-write would lose updates), and no claim that lost to a
    // higher token succeeded after it.
    let mut base = 1_000;
    for round in 0..4 {
        let local = format!("race{round}");
        store
            .append(&mailbox(&local), stream(b"Subject: r\n\nx\n"))
            .await
            .unwrap();
        let order: Vec<u64> = (1..=12)
            .map(|i| if i % 2 == 0 { base + i } else { base + 13 - i })
            .collect();
        let tasks: Vec<_> = order
            .into_iter()
            .map(|fence| {
                let (store, local) = (store.clone(), local.clone());
                tokio::spawn(async move {
                    let mut d = store.open(&mailbox(&local)).await.unwrap();
                    let r = d.claim(fence).await;
                    (fence, r, std::time::Instant::now())
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(
            fence_of(&sw, &local).await,
            base + 12,
            "round {round}: the highest claim won"
        );
        for (fence, r, _) in &results {
            match r {
                Ok(()) | Err(StoreError::Fenced(_)) => {}
                Err(e) => panic!("claim {fence}: {e}"),
            }
        }
        assert!(
            results.iter().any(|(f, r, _)| *f == base + 12 && r.is_ok()),
            "the highest claim succeeded"
        );
        base += 100;
    }
}
