//! The store conformance kit on PostgreSQL, and what this backend adds.

mod common;

use common::TestDb;
use popgate_store::conformance::{self, Capabilities};
use popgate_store::{MailStore, MailboxId, MessageStream, StoreError};
use tokio::io::AsyncReadExt;

fn stream(bytes: &[u8]) -> MessageStream {
    Box::pin(std::io::Cursor::new(bytes.to_vec()))
}

async fn read_all(mut s: MessageStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.expect("read");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kit_passes() {
    let db = TestDb::new("conf").await;
    let store = db.store();
    conformance::run(&store, "acme", Capabilities { fencing: true }).await;
    // Tenants share the tables but never each other's mail.
    conformance::run(&store, "globex", Capabilities { fencing: true }).await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_fence_deletes_nothing_and_keeps_the_newer_fence() {
    let db = TestDb::new("fence").await;
    let store = db.store();
    let mb = MailboxId::new("acme", "bob", "acme.example");
    for i in 0..3 {
        store
            .append(
                &mb,
                stream(format!("Subject: {i}\r\n\r\n{i}\r\n").as_bytes()),
            )
            .await
            .unwrap();
    }
    // A session whose lock expired while it was paused (fence 10), and the
    // session that took the mailbox over (fence 11) and committed first.
    let mut paused = store.open(&mb).await.unwrap();
    let mut newer = store.open(&mb).await.unwrap();
    assert_eq!(newer.expunge(&[0], 11).await.unwrap().deleted, 1);
    match paused.expunge(&[1, 2], 10).await {
        Err(StoreError::Fenced(10)) => {}
        other => panic!("want Fenced(10), got {other:?}"),
    }
    assert_eq!(store.open(&mb).await.unwrap().messages().len(), 2);
    // The same token again (a retried commit) is fine; a newer one too.
    assert_eq!(newer.expunge(&[1], 11).await.unwrap().deleted, 1);
    let mut later = store.open(&mb).await.unwrap();
    assert_eq!(later.expunge(&[0], 12).await.unwrap().deleted, 1);
    assert!(store.open(&mb).await.unwrap().messages().is_empty());
    // u64 tokens above i64::MAX saturate rather than wrap.
    store.append(&mb, stream(b"x\r\n")).await.unwrap();
    let mut huge = store.open(&mb).await.unwrap();
    assert_eq!(huge.expunge(&[0], u64::MAX).await.unwrap().deleted, 1);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_delivery_matches_popgate_deliver() {
    let db = TestDb::new("sqldeliver").await;
    let store = db.store();
    let mb = MailboxId::new("acme", "bob", "acme.example");
    // Line endings of every kind, NUL, 8-bit, a backslash, and enough to
    // span several chunks.
    let mut big = b"Subject: mixed\n\n".to_vec();
    for i in 0..40_000u32 {
        big.extend_from_slice(format!("line {i}\\ \x00").as_bytes());
        big.extend_from_slice(b"\xff\r");
        big.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    let samples: Vec<Vec<u8>> = conformance::samples()
        .into_iter()
        .chain([Vec::new(), b"\r".to_vec(), b"\n".to_vec(), big])
        .collect();
    let mut uidls = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let uidl = if i % 2 == 0 {
            store.append(&mb, stream(s)).await.unwrap()
        } else {
            sqlx::query_scalar::<_, String>("SELECT popgate_deliver($1, $2, $3)")
                .bind("acme")
                .bind("Bob@Acme.Example")
                .bind(s)
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        uidls.push(uidl);
    }
    let drop = store.open(&mb).await.unwrap();
    assert_eq!(drop.messages().len(), samples.len());
    for (i, (m, s)) in drop.messages().iter().zip(&samples).enumerate() {
        assert_eq!(m.uidl, uidls[i], "message {i}: UIDLs in UID order");
        assert_eq!(m.size, pop3_proto::crlf::pop3_size(s), "message {i}: size");
        assert_eq!(
            &read_all(drop.fetch(i).await.unwrap()).await,
            s,
            "message {i}: body"
        );
    }
    // Both paths chunk alike.
    let chunks: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT m.uid, count(c.seq)::int FROM messages m LEFT JOIN message_chunks c ON c.message_id = m.id \
         GROUP BY m.uid ORDER BY m.uid",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let want: Vec<i32> = samples
        .iter()
        .map(|s| s.len().div_ceil(backend_postgres::CHUNK_SIZE) as i32)
        .collect();
    assert_eq!(chunks.iter().map(|c| c.1).collect::<Vec<_>>(), want);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_uidls_are_kept() {
    let db = TestDb::new("import").await;
    let store = db.store();
    let mb = MailboxId::new("acme", "carol", "acme.example");
    store
        .append(&mb, stream(b"Subject: a\r\n\r\n"))
        .await
        .unwrap();
    // An import from Dovecot rewrites the UIDL; popgate serves it as stored.
    sqlx::query("UPDATE messages SET uidl = '00000a2f5d3b1c07'")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        store.open(&mb).await.unwrap().messages()[0].uidl,
        "00000a2f5d3b1c07"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_behind_is_refused_with_a_clear_message() {
    let db = TestDb::unmigrated("behind");
    let store = db.store();
    let status = backend_postgres::schema_status(store.pool()).await.unwrap();
    assert!(matches!(
        status,
        backend_postgres::SchemaStatus::Behind { applied: None, .. }
    ));
    let mb = MailboxId::new("acme", "bob", "acme.example");
    match store.open(&mb).await {
        Err(StoreError::Permanent(m)) => assert!(m.contains("popgate migrate"), "{m}"),
        other => panic!("want a permanent error, got {:?}", other.map(|_| ())),
    }
    let applied = backend_postgres::migrate(&db.config).await.unwrap();
    assert_eq!(applied.len(), backend_postgres::MIGRATOR.iter().count());
    assert_eq!(
        backend_postgres::schema_status(store.pool()).await.unwrap(),
        backend_postgres::SchemaStatus::Current
    );
    assert!(store.open(&mb).await.unwrap().messages().is_empty());
    // Migrating again is a no-op.
    assert!(
        backend_postgres::migrate(&db.config)
            .await
            .unwrap()
            .is_empty()
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_temporary_error() {
    let mut config = backend_postgres::PgConfig::new("postgres://postgres@127.0.0.1:1/test");
    config.connect_timeout = std::time::Duration::from_millis(300);
    let store = backend_postgres::PgStore::connect_lazy(&config).unwrap();
    let mb = MailboxId::new("acme", "bob", "acme.example");
    match store.open(&mb).await {
        Err(e @ StoreError::Temporary(_)) => assert!(e.is_temporary()),
        other => panic!("want a temporary error, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        store.append(&mb, stream(b"x")).await,
        Err(StoreError::Temporary(_))
    ));
    assert!(matches!(store.ping().await, Err(StoreError::Temporary(_))));
}
