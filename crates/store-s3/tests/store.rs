//! The S3 store against a loopback S3 server: what the conformance kit
//! does not cover (objects written by others, odd keys, the size index,
//! paging, large deliveries, an unreachable server).

mod common;

use std::time::Duration;

use common::{BUCKET, S3Server};
use popgate_store::{MailStore, MailboxId, MessageStream, StoreError, valid_uidl};
use store_s3::{S3Store, uidl_for};
use tokio::io::AsyncReadExt;

fn mailbox(local: &str) -> MailboxId {
    MailboxId::new("t", local, "s3.example")
}

fn prefix(local: &str) -> String {
    format!("s3.example/{local}/")
}

fn stream(bytes: Vec<u8>) -> MessageStream {
    Box::pin(std::io::Cursor::new(bytes))
}

fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pop3_proto::crlf::CrlfNormaliser::default().feed(bytes, &mut out);
    out
}

async fn read_all(mut s: MessageStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_objects_are_served_with_computed_and_cached_sizes() {
    let s3 = S3Server::start().await;
    let store = S3Store::new(s3.config()).unwrap();
    let p = prefix("bob");
    let lf = b"From: a@example.org\nSubject: lf\n\nline\n.dot\n".to_vec();
    let cr = b"From: a@example.org\r\nSubject: crlf\r\n\r\nline\r\n".to_vec();
    s3.put(&format!("{p}001-lf"), &lf).await;
    s3.put(&format!("{p}002-crlf"), &cr).await;

    let drop = store.open(&mailbox("bob")).await.unwrap();
    let m = drop.messages();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[0].uidl.as_str(), m[0].size),
        ("001-lf", crlf(&lf).len() as u64)
    );
    assert_eq!(
        (m[1].uidl.as_str(), m[1].size),
        ("002-crlf", cr.len() as u64)
    );
    assert_eq!(
        read_all(drop.fetch(0).await.unwrap()).await,
        lf,
        "served as stored"
    );

    // The sizes are now in the index, which the next open trusts: a
    // doctored entry shows through (so the object was not read again).
    let index_key = format!("{p}.popgate/sizes.json");
    let index = String::from_utf8(s3.get(&index_key).await.expect("index written")).unwrap();
    let doctored = index.replace(&format!("\"s\":{}", crlf(&lf).len()), "\"s\":4242");
    assert_ne!(doctored, index);
    s3.put(&index_key, doctored.as_bytes()).await;
    let again = store.open(&mailbox("bob")).await.unwrap();
    assert_eq!(
        again.messages()[0].size,
        4242,
        "the size came from the index"
    );
    assert_eq!(again.messages()[1].size, cr.len() as u64);

    // A rewritten object is another version: its size is computed afresh.
    s3.put(&format!("{p}001-lf"), b"Subject: new\n\nx\n").await;
    let third = store.open(&mailbox("bob")).await.unwrap();
    assert_eq!(third.messages().len(), 2);
    let m = third
        .messages()
        .iter()
        .find(|m| m.uidl == "001-lf")
        .unwrap();
    assert_eq!(m.size, crlf(b"Subject: new\n\nx\n").len() as u64);

    // A broken index is ignored and rebuilt.
    s3.put(&index_key, b"{ not json").await;
    let fourth = store.open(&mailbox("bob")).await.unwrap();
    assert_eq!(fourth.messages().len(), 2);
    assert!(
        s3.get(&index_key)
            .await
            .unwrap()
            .starts_with(b"{\"version\":2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_metadata_is_used_and_deliver_sets_it() {
    let s3 = S3Server::start().await;
    let store = S3Store::new(s3.config()).unwrap();
    let msg = b"Subject: delivered\n\nbody\n".to_vec();
    let uidl = store
        .append(&mailbox("carol"), stream(msg.clone()))
        .await
        .unwrap();
    let keys = s3.keys(&prefix("carol")).await;
    assert_eq!(keys.len(), 1);
    let head = s3
        .client()
        .head_object()
        .bucket(BUCKET)
        .key(&keys[0])
        .send()
        .await
        .unwrap();
    let meta = head.metadata().unwrap();
    assert_eq!(
        meta.get("pop3-size").map(String::as_str),
        Some(crlf(&msg).len().to_string().as_str())
    );
    assert_eq!(
        head.content_length(),
        Some(msg.len() as i64),
        "stored as given"
    );
    let drop = store.open(&mailbox("carol")).await.unwrap();
    assert_eq!(drop.messages()[0].uidl, uidl);
    assert_eq!(drop.messages()[0].size, crlf(&msg).len() as u64);

    // Any writer may set the metadata; it is believed.
    s3.client()
        .put_object()
        .bucket(BUCKET)
        .key(format!("{}zz-from-mta", prefix("carol")))
        .metadata("pop3-size", "77")
        .body(b"whatever\n".to_vec().into())
        .send()
        .await
        .unwrap();
    let drop = store.open(&mailbox("carol")).await.unwrap();
    assert_eq!(drop.messages().last().unwrap().size, 77);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_keys_get_valid_unique_uidls_and_markers_are_not_messages() {
    let s3 = S3Server::start().await;
    let store = S3Store::new(s3.config()).unwrap();
    let p = prefix("dave");
    // Over 70 characters (s3s-fs keeps a key in a file name: not much more).
    let long = "x".repeat(100);
    let odd = [
        long.as_str(),
        "with space",
        "caf\u{e9}",
        "~tilde",
        "sub/dir/msg",
        "plain-key",
        "a+b=c@d<e>",
    ];
    for (i, k) in odd.iter().enumerate() {
        s3.put(
            &format!("{p}{k}"),
            format!("Subject: {i}\n\n{i}\n").as_bytes(),
        )
        .await;
    }
    // Not messages: a folder marker and popgate's own objects.
    s3.put(&format!("{p}.popgate/fence"), b"1\n").await;
    s3.put(&format!("{}other/", prefix("dave")), b"").await;
    let drop = store.open(&mailbox("dave")).await.unwrap();
    let m = drop.messages();
    assert_eq!(m.len(), odd.len(), "{m:?}");
    let mut seen = std::collections::HashSet::new();
    for info in m {
        assert!(valid_uidl(&info.uidl), "{info:?}");
        assert!(seen.insert(info.uidl.clone()), "unique: {info:?}");
    }
    let derived: std::collections::HashSet<String> = odd.iter().map(|k| uidl_for(k)).collect();
    assert_eq!(seen, derived, "derived from the key");
    assert!(m.iter().any(|x| x.uidl == "plain-key"));
    assert!(m.iter().any(|x| x.uidl == "sub/dir/msg"));
    assert_eq!(m.iter().filter(|x| x.uidl.starts_with('~')).count(), 4);
    // Every one of them can be read.
    for i in 0..m.len() {
        let body = read_all(drop.fetch(i).await.unwrap()).await;
        assert!(body.starts_with(b"Subject: "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_follows_every_page_and_expunge_takes_both_paths() {
    let s3 = S3Server::start().await;
    let mut config = s3.config();
    config.list_page_size = 7;
    let store = S3Store::new(config).unwrap();
    let p = prefix("erin");
    for i in 0..60 {
        s3.put(
            &format!("{p}m{i:03}"),
            format!("Subject: {i}\n\n").as_bytes(),
        )
        .await;
    }
    let mut drop = store.open(&mailbox("erin")).await.unwrap();
    assert_eq!(drop.messages().len(), 60, "9 pages of 7");
    // Someone else removes two of the messages this session will delete.
    s3.client()
        .delete_object()
        .bucket(BUCKET)
        .key(format!("{p}m000"))
        .send()
        .await
        .unwrap();
    s3.client()
        .delete_object()
        .bucket(BUCKET)
        .key(format!("{p}m050"))
        .send()
        .await
        .unwrap();
    let index = |uidl: &str| drop.messages().iter().position(|m| m.uidl == uidl).unwrap();
    // Many targets: checked with one listing.
    let many: Vec<usize> = (0..40).map(|i| index(&format!("m{i:03}"))).collect();
    let report = drop.expunge(&many, 1).await.unwrap();
    assert_eq!((report.deleted, report.already_gone), (39, 1));
    // Few targets: checked one by one.
    let mut drop2 = store.open(&mailbox("erin")).await.unwrap();
    assert_eq!(drop2.messages().len(), 19);
    let few: Vec<usize> = drop2
        .messages()
        .iter()
        .enumerate()
        .filter(|(_, m)| ["m045", "m046"].contains(&m.uidl.as_str()))
        .map(|(i, _)| i)
        .collect();
    let report = drop2.expunge(&few, 2).await.unwrap();
    assert_eq!((report.deleted, report.already_gone), (2, 0));
    assert_eq!(
        s3.keys(&p)
            .await
            .iter()
            .filter(|k| !k.contains(".popgate/"))
            .count(),
        17
    );
    // The size index forgets what is gone.
    let drop3 = store.open(&mailbox("erin")).await.unwrap();
    assert_eq!(drop3.messages().len(), 17);
    let index =
        String::from_utf8(s3.get(&format!("{p}.popgate/sizes.json")).await.unwrap()).unwrap();
    assert!(
        !index.contains("\"m000\"") && !index.contains("\"m001\""),
        "{index}"
    );
    assert!(index.contains("\"m049\""), "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_delivery_is_spooled_and_streams_back() {
    let s3 = S3Server::start().await;
    let store = S3Store::new(s3.config()).unwrap();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    let mut msg = b"Subject: large\n\n".to_vec();
    while msg.len() < 12 << 20 {
        msg.extend_from_slice(line);
    }
    store
        .append(&mailbox("fay"), stream(msg.clone()))
        .await
        .unwrap();
    let drop = store.open(&mailbox("fay")).await.unwrap();
    assert_eq!(drop.messages()[0].size, crlf(&msg).len() as u64);
    let back = read_all(drop.fetch(0).await.unwrap()).await;
    assert!(back == msg, "12 MiB back intact");
    // TOP: read a little and drop the stream; the store stays usable.
    let mut s = drop.fetch(0).await.unwrap();
    let mut head = [0u8; 16];
    s.read_exact(&mut head).await.unwrap();
    drop_stream(s);
    assert_eq!(&read_all(drop.fetch(0).await.unwrap()).await[..16], &head);
}

fn drop_stream(s: MessageStream) {
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_temporary_failure_and_loses_nothing() {
    let mut s3 = S3Server::start().await;
    let mut config = s3.config();
    config.connect_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(2);
    let store = S3Store::new(config).unwrap();
    for i in 0..3 {
        store
            .append(
                &mailbox("gus"),
                stream(format!("Subject: {i}\n\n").into_bytes()),
            )
            .await
            .unwrap();
    }
    let mut drop = store.open(&mailbox("gus")).await.unwrap();
    s3.stop();
    let temporary = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Temporary(_)) => {}
        other => panic!("{what} with S3 down: want Temporary, got {other:?}"),
    };
    temporary(store.open(&mailbox("gus")).await.map(|_| ()), "open");
    temporary(drop.fetch(0).await.map(|_| ()), "fetch");
    temporary(
        store
            .append(&mailbox("gus"), stream(b"x\n".to_vec()))
            .await
            .map(|_| ()),
        "append",
    );
    temporary(drop.expunge(&[0, 1, 2], 5).await.map(|_| ()), "expunge");
    temporary(store.ping().await, "ping");
    s3.restart();
    let after = store.open(&mailbox("gus")).await.unwrap();
    assert_eq!(
        after.messages(),
        drop.messages(),
        "nothing lost, nothing changed"
    );
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_permanent() {
    let s3 = S3Server::start().await;
    let mut config = s3.config();
    config.bucket = "no-such-bucket".into();
    let store = S3Store::new(config).unwrap();
    match store.open(&mailbox("hal")).await {
        Err(StoreError::Permanent(e)) => assert!(e.contains("NoSuchBucket"), "{e}"),
        Err(e) => panic!("want Permanent, got {e:?}"),
        Ok(_) => panic!("want Permanent, got a maildrop"),
    }
    let ping = store.ping().await;
    assert!(matches!(ping, Err(StoreError::Permanent(_))), "{ping:?}");
}

#[test]
fn validation_names_the_field() {
    let ok = store_s3::S3Config::new("mail");
    ok.validate().unwrap();
    let field = |f: &dyn Fn(&mut store_s3::S3Config)| {
        let mut c = store_s3::S3Config::new("mail");
        f(&mut c);
        c.validate().unwrap_err().0
    };
    assert_eq!(field(&|c| c.bucket = String::new()), "bucket");
    assert_eq!(field(&|c| c.prefix = "%d/".into()), "prefix");
    assert_eq!(field(&|c| c.prefix = "%d/%n".into()), "prefix");
    assert_eq!(field(&|c| c.prefix = "%d/%q/".into()), "prefix");
    assert_eq!(
        field(&|c| c.endpoint = Some("localhost:9000".into())),
        "endpoint"
    );
    assert_eq!(field(&|c| c.region = Some("us east".into())), "region");
    assert_eq!(field(&|c| c.read_timeout = Duration::ZERO), "read_timeout");
    assert_eq!(field(&|c| c.max_attempts = 0), "max_attempts");
    assert_eq!(field(&|c| c.list_page_size = 1001), "list_page_size");
}
