//! UIDL and LIST of a large maildrop go out in pieces through a pipe far
//! smaller than the reply: complete, in order, without the deleted ones;
//! a client that leaves in the middle of one commits nothing.

use std::sync::Arc;

use popgate_store::{MailStore, MailboxId, MemoryStore};

use super::Client;
use crate::limits::{LimitsConfig, MemoryLimits};

const MESSAGES: usize = 20_000;

async fn big_store() -> (Arc<MemoryStore>, MailboxId) {
    let store = Arc::new(MemoryStore::new());
    let mb = MailboxId::new("acme", "bob", "acme.example");
    for i in 0..MESSAGES {
        let body = format!("Subject: {i}\n\n{}\n", "x".repeat(i % 50));
        store
            .append(&mb, Box::pin(std::io::Cursor::new(body.into_bytes())))
            .await
            .unwrap();
    }
    (store, mb)
}

async fn logged_in(store: &Arc<MemoryStore>) -> Client {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let locks = Arc::new(popgate_lock::MemoryLocks::new());
    let mut c = Client::start_with(&limits, store.clone(), locks, std::time::Duration::ZERO);
    c.line().await.unwrap();
    assert!(c.cmd("USER bob@acme.example").await.starts_with("+OK"));
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
    c
}

#[tokio::test]
async fn a_listing_far_larger_than_the_pipe_is_complete_and_in_order() {
    let (store, mb) = big_store().await;
    let expected = store.open(&mb).await.unwrap();
    let want = expected.messages();
    let mut c = logged_in(&store).await;
    for n in [2, 777, MESSAGES] {
        assert!(c.cmd(&format!("DELE {n}")).await.starts_with("+OK"));
    }
    let live: Vec<usize> = (1..=MESSAGES)
        .filter(|n| ![2, 777, MESSAGES].contains(n))
        .collect();
    let uidl = c.multi("UIDL").await;
    assert_eq!(uidl[0], "+OK");
    let got: Vec<&str> = uidl[1..].iter().map(String::as_str).collect();
    let wanted: Vec<String> = live
        .iter()
        .map(|&n| format!("{n} {}", want[n - 1].uidl))
        .collect();
    assert_eq!(got, wanted);
    let list = c.multi("LIST").await;
    let octets: u64 = live.iter().map(|&n| want[n - 1].size).sum();
    assert_eq!(
        list[0],
        format!("+OK {} messages ({octets} octets)", live.len())
    );
    let wanted: Vec<String> = live
        .iter()
        .map(|&n| format!("{n} {}", want[n - 1].size))
        .collect();
    assert_eq!(list[1..], wanted[..]);
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(c.line().await, None);
    assert_eq!(
        store.count(&mb),
        MESSAGES - 3,
        "exactly the marked ones went"
    );
}

#[tokio::test]
async fn leaving_in_the_middle_of_a_listing_deletes_nothing() {
    let (store, mb) = big_store().await;
    let mut c = logged_in(&store).await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    c.send("UIDL\r\n").await;
    assert_eq!(c.line().await.as_deref(), Some("+OK"));
    assert!(c.line().await.unwrap().starts_with("2 "));
    // The reply is far larger than the pipe: the session is blocked in
    // the middle of it when the client goes.
    let Client {
        io,
        _session: session,
        ..
    } = c;
    drop(io);
    tokio::time::timeout(std::time::Duration::from_secs(10), session)
        .await
        .expect("the session ends when the client goes")
        .unwrap();
    assert_eq!(store.count(&mb), MESSAGES, "nothing was deleted");
}
