//! The conformance kit: the behaviour every `MailStore` backend must show.
//!
//! A backend's test calls [`run`] from inside its own tokio test with a
//! store and a fresh tenant name; the kit creates its own mailboxes under
//! that tenant and panics with a description of the first broken rule.

use std::collections::HashSet;

use tokio::io::AsyncReadExt;

use crate::{MailStore, MailboxId, MessageStream, StoreError, valid_uidl};

/// What a backend promises beyond the common rules.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// The store refuses an expunge with a fencing token older than one it
    /// has already committed.
    pub fencing: bool,
}

fn stream(bytes: &[u8]) -> MessageStream {
    Box::pin(std::io::Cursor::new(bytes.to_vec()))
}

/// The CRLF-normalised form of a message: what RETR sends before stuffing.
fn normalised(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut n = pop3_proto::crlf::CrlfNormaliser::default();
    n.feed(bytes, &mut out);
    out
}

async fn read_all(store_stream: MessageStream) -> Vec<u8> {
    let mut s = store_stream;
    let mut v = Vec::new();
    s.read_to_end(&mut v)
        .await
        .expect("reading a fetched message");
    v
}

/// Sample messages: CRLF, LF-only, dot lines, no final newline, empty body.
pub fn samples() -> Vec<Vec<u8>> {
    vec![
        b"From: a@example.org\r\nSubject: crlf\r\n\r\nHello\r\n.dot line\r\n".to_vec(),
        b"From: b@example.org\nSubject: lf only\n\nline 1\nline 2\n..two dots\n".to_vec(),
        b"Subject: no final newline\r\n\r\nlast line".to_vec(),
        b"Subject: empty body\r\n\r\n".to_vec(),
    ]
}

/// Runs every rule against `store`, using mailboxes of tenant `tenant`
/// (choose a fresh tenant per run so leftovers of an earlier run do not count).
pub async fn run(store: &dyn MailStore, tenant: &str, caps: Capabilities) {
    let mb = |name: &str| MailboxId::new(tenant, name, "conformance.example");

    empty_mailbox_is_empty(store, &mb("empty")).await;
    appended_messages_are_listed_in_order(store, &mb("order")).await;
    snapshot_is_stable(store, &mb("snapshot")).await;
    expunge_removes_only_marked(store, &mb("expunge")).await;
    expunge_twice_is_not_an_error(store, &mb("twice")).await;
    uidls_are_never_reused(store, &mb("reuse")).await;
    mailboxes_are_isolated(store, &mb("left"), &mb("right")).await;
    large_message_streams(store, &mb("large")).await;
    imported_messages_keep_their_uidls(store, &mb("import")).await;
    if caps.fencing {
        stale_fence_deletes_nothing(store, &mb("fence")).await;
    }
}

async fn empty_mailbox_is_empty(store: &dyn MailStore, mb: &MailboxId) {
    let drop = store
        .open(mb)
        .await
        .expect("open of a mailbox that does not exist yet");
    assert!(drop.messages().is_empty(), "a new mailbox must be empty");
}

async fn appended_messages_are_listed_in_order(store: &dyn MailStore, mb: &MailboxId) {
    let samples = samples();
    let mut uidls = Vec::new();
    for s in &samples {
        uidls.push(store.append(mb, stream(s)).await.expect("append"));
    }
    let drop = store.open(mb).await.expect("open");
    let msgs = drop.messages();
    assert_eq!(
        msgs.len(),
        samples.len(),
        "every appended message is listed"
    );
    let mut seen = HashSet::new();
    for (i, (m, s)) in msgs.iter().zip(&samples).enumerate() {
        assert!(valid_uidl(&m.uidl), "UIDL {:?} breaks RFC 1939", m.uidl);
        assert!(
            seen.insert(m.uidl.clone()),
            "UIDL {:?} is not unique",
            m.uidl
        );
        assert_eq!(m.uidl, uidls[i], "append returns the UIDL that open lists");
        let want = normalised(s);
        assert_eq!(
            m.size,
            want.len() as u64,
            "size of message {} is its CRLF-normalised length",
            i + 1
        );
        let got = normalised(&read_all(drop.fetch(i).await.expect("fetch")).await);
        assert_eq!(got, want, "fetch of message {} returns its content", i + 1);
    }
    // UIDLs and sizes are stable across opens.
    let again = store.open(mb).await.expect("reopen");
    assert_eq!(
        again.messages(),
        msgs,
        "a second open lists the same messages"
    );
}

async fn snapshot_is_stable(store: &dyn MailStore, mb: &MailboxId) {
    store
        .append(mb, stream(b"Subject: one\r\n\r\n1\r\n"))
        .await
        .expect("append");
    let drop = store.open(mb).await.expect("open");
    store
        .append(mb, stream(b"Subject: two\r\n\r\n2\r\n"))
        .await
        .expect("append during session");
    assert_eq!(
        drop.messages().len(),
        1,
        "a delivery during a session does not change its snapshot"
    );
    assert_eq!(
        store.open(mb).await.expect("reopen").messages().len(),
        2,
        "the next session sees the delivery"
    );
}

async fn expunge_removes_only_marked(store: &dyn MailStore, mb: &MailboxId) {
    for i in 0..5 {
        store
            .append(
                mb,
                stream(format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes()),
            )
            .await
            .expect("append");
    }
    let mut drop = store.open(mb).await.expect("open");
    let before: Vec<_> = drop.messages().to_vec();
    let report = drop.expunge(&[0, 2, 4], 1).await.expect("expunge");
    assert_eq!(report.deleted, 3, "expunge reports what it deleted");
    let after = store.open(mb).await.expect("reopen");
    let left: Vec<_> = after.messages().iter().map(|m| m.uidl.clone()).collect();
    assert_eq!(
        left,
        vec![before[1].uidl.clone(), before[3].uidl.clone()],
        "only the marked messages are gone"
    );
    let body = read_all(after.fetch(1).await.expect("fetch")).await;
    assert!(
        body.ends_with(b"body 3\r\n"),
        "the survivors keep their content"
    );
}

async fn expunge_twice_is_not_an_error(store: &dyn MailStore, mb: &MailboxId) {
    store
        .append(mb, stream(b"Subject: x\r\n\r\nx\r\n"))
        .await
        .expect("append");
    let mut a = store.open(mb).await.expect("open a");
    let mut b = store.open(mb).await.expect("open b");
    assert_eq!(a.expunge(&[0], 2).await.expect("first expunge").deleted, 1);
    let report = b
        .expunge(&[0], 3)
        .await
        .expect("expunging a message that is already gone is not an error");
    assert_eq!(report.deleted, 0);
    assert_eq!(report.already_gone, 1);
    match a.fetch(0).await {
        Err(StoreError::Gone) => {}
        Err(e) => panic!("fetch of an expunged message: want Gone, got {e}"),
        Ok(_) => panic!("fetch of an expunged message must fail"),
    }
}

async fn uidls_are_never_reused(store: &dyn MailStore, mb: &MailboxId) {
    let first = store
        .append(mb, stream(b"Subject: same\r\n\r\nsame\r\n"))
        .await
        .expect("append");
    let mut drop = store.open(mb).await.expect("open");
    drop.expunge(&[0], 4).await.expect("expunge");
    let second = store
        .append(mb, stream(b"Subject: same\r\n\r\nsame\r\n"))
        .await
        .expect("append");
    assert_ne!(
        first, second,
        "a new message never gets the UIDL of a deleted one"
    );
}

async fn mailboxes_are_isolated(store: &dyn MailStore, left: &MailboxId, right: &MailboxId) {
    store
        .append(left, stream(b"Subject: left\r\n\r\n"))
        .await
        .expect("append");
    assert_eq!(store.open(left).await.expect("open").messages().len(), 1);
    assert!(
        store.open(right).await.expect("open").messages().is_empty(),
        "mail of one mailbox never shows in another"
    );
}

async fn large_message_streams(store: &dyn MailStore, mb: &MailboxId) {
    // 3 MiB of LF-only lines: enough to cross every chunk boundary a backend uses.
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    let mut msg = b"Subject: large\n\n".to_vec();
    while msg.len() < 3 << 20 {
        msg.extend_from_slice(line);
    }
    store.append(mb, stream(&msg)).await.expect("append large");
    let drop = store.open(mb).await.expect("open");
    let want = normalised(&msg);
    assert_eq!(drop.messages()[0].size, want.len() as u64);
    let got = normalised(&read_all(drop.fetch(0).await.expect("fetch")).await);
    assert!(got == want, "a large message comes back intact");
}

async fn stale_fence_deletes_nothing(store: &dyn MailStore, mb: &MailboxId) {
    for _ in 0..2 {
        store
            .append(mb, stream(b"Subject: f\r\n\r\nf\r\n"))
            .await
            .expect("append");
    }
    let mut newer = store.open(mb).await.expect("open newer");
    let mut older = store.open(mb).await.expect("open older");
    newer
        .expunge(&[0], 100)
        .await
        .expect("expunge with the newest fence");
    match older.expunge(&[1], 99).await {
        Err(StoreError::Fenced(99)) => {}
        other => {
            panic!("an expunge with a stale fence must be refused with Fenced(99), got {other:?}")
        }
    }
    assert_eq!(
        store.open(mb).await.expect("reopen").messages().len(),
        1,
        "a stale fence deleted nothing"
    );
}

/// UIDLs other servers give: Dovecot's default, a Courier base name, a
/// Cyrus `uidvalidity.uid`, and the longest RFC 1939 allows.
fn carried_uidls() -> Vec<String> {
    vec![
        "000000016581B4F2".to_owned(),
        "1701234567.M12345P678.old-host,S=1234".to_owned(),
        "1427364213.17".to_owned(),
        format!("{}~", "u".repeat(69)),
    ]
}

async fn imported_messages_keep_their_uidls(store: &dyn MailStore, mb: &MailboxId) {
    let first = store
        .append(mb, stream(b"Subject: before\r\n\r\nbefore\r\n"))
        .await
        .expect("append before the import");
    let samples = samples();
    let uidls = carried_uidls();
    // The first half one by one, the rest through one importer.
    let half = samples.len() / 2;
    for (s, u) in samples.iter().zip(&uidls).take(half) {
        store
            .import(mb, u, stream(s))
            .await
            .unwrap_or_else(|e| panic!("import with UIDL {u}: {e}"));
    }
    let mut importer = store.importer(mb).await.expect("importer");
    for (s, u) in samples.iter().zip(&uidls).skip(half) {
        importer
            .add(u, stream(s))
            .await
            .unwrap_or_else(|e| panic!("importer: add with UIDL {u}: {e}"));
    }
    importer.finish().await.expect("importer: finish");
    match store
        .import(mb, "has space", stream(b"Subject: bad\r\n\r\n"))
        .await
    {
        Err(StoreError::Permanent(_)) => {}
        other => {
            panic!("an import with a UIDL that breaks RFC 1939 must be Permanent, got {other:?}")
        }
    }
    let last = store
        .append(mb, stream(b"Subject: after\r\n\r\nafter\r\n"))
        .await
        .expect("append after the import");
    let drop = store.open(mb).await.expect("open");
    let listed: Vec<&str> = drop.messages().iter().map(|m| m.uidl.as_str()).collect();
    let mut want: Vec<&str> = vec![first.as_str()];
    want.extend(uidls.iter().map(String::as_str));
    want.push(last.as_str());
    assert_eq!(
        listed, want,
        "imported messages are listed in import order with the UIDLs they carried, and nothing of a refused import shows"
    );
    for (i, s) in samples.iter().enumerate() {
        let want = normalised(s);
        assert_eq!(
            drop.messages()[i + 1].size,
            want.len() as u64,
            "size of imported message {}",
            i + 1
        );
        let got = normalised(&read_all(drop.fetch(i + 1).await.expect("fetch")).await);
        assert_eq!(got, want, "imported message {} keeps its content", i + 1);
    }
    assert_eq!(
        store.open(mb).await.expect("reopen").messages(),
        drop.messages(),
        "carried UIDLs are stable across opens"
    );
}
