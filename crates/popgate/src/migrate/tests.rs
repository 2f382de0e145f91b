//! The copy engine on in-memory stores and locks: UIDLs, order, resume,
//! locks, a source that changes under it, and --delete-source.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use popgate_lock::{MailboxLocks, MemoryLocks};
use popgate_store::{
    ExpungeReport, MailStore, MailboxId, Maildrop, MemoryStore, MessageInfo, MessageStream,
    StoreError,
};
use tokio::io::AsyncReadExt;

use super::copy::{self, Job, Options, Outcome};
use super::progress::Progress;

fn mailbox() -> MailboxId {
    MailboxId::new("acme", "bob", "acme.example")
}

fn stream(bytes: &[u8]) -> MessageStream {
    Box::pin(std::io::Cursor::new(bytes.to_vec()))
}

async fn filled(n: usize) -> MemoryStore {
    let store = MemoryStore::new();
    for i in 0..n {
        store
            .import(
                &mailbox(),
                &format!("old-uidl-{i}"),
                stream(format!("Subject: {i}\n\nbody {i}\n.dot\n").as_bytes()),
            )
            .await
            .unwrap();
    }
    store
}

fn job(source: Arc<dyn MailStore>, dest: Arc<dyn MailStore>, locks: Arc<dyn MailboxLocks>) -> Job {
    Job {
        label: "acme/bob@acme.example".into(),
        source,
        source_mailbox: mailbox(),
        source_locks: Some(locks.clone()),
        dest,
        dest_mailbox: mailbox(),
        dest_locks: locks,
    }
}

const COPY: Options = Options {
    dry_run: false,
    delete_source: false,
};

async fn listing(store: &dyn MailStore) -> Vec<MessageInfo> {
    store.open(&mailbox()).await.unwrap().messages().to_vec()
}

async fn body(store: &dyn MailStore, i: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let drop = store.open(&mailbox()).await.unwrap();
    drop.fetch(i)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

fn done(outcome: Outcome) -> copy::Stats {
    match outcome {
        Outcome::Done(s) => s,
        other => panic!("want Done, got {other:?}"),
    }
}

#[tokio::test]
async fn copies_keep_uidls_sizes_bytes_and_order_and_a_rerun_copies_nothing() {
    let source = Arc::new(filled(5).await);
    let dest = Arc::new(MemoryStore::new());
    let locks: Arc<dyn MailboxLocks> = Arc::new(MemoryLocks::new());
    let j = job(source.clone(), dest.clone(), locks);
    let progress = Progress::new(1);
    let s = done(copy::run(&j, COPY, &progress).await);
    assert_eq!((s.messages, s.copied, s.present), (5, 5, 0));
    assert_eq!(listing(&*dest).await, listing(&*source).await);
    assert_eq!(body(&*dest, 3).await, body(&*source, 3).await);
    // Again: everything is there and verified, nothing copied twice.
    let s = done(copy::run(&j, COPY, &progress).await);
    assert_eq!((s.copied, s.present), (0, 5));
    assert_eq!(dest.count(&mailbox()), 5);
    // A message delivered to the source since is copied after the others.
    source
        .append(&mailbox(), stream(b"Subject: late\n\n"))
        .await
        .unwrap();
    let s = done(copy::run(&j, COPY, &progress).await);
    assert_eq!((s.copied, s.present), (1, 5));
    assert_eq!(listing(&*dest).await, listing(&*source).await);
}

#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let source = Arc::new(filled(3).await);
    let dest = Arc::new(MemoryStore::new());
    let j = job(source.clone(), dest.clone(), Arc::new(MemoryLocks::new()));
    let opts = Options {
        dry_run: true,
        delete_source: true,
    };
    let s = done(copy::run(&j, opts, &Progress::new(1)).await);
    assert_eq!(s.copied, 3);
    assert_eq!(dest.count(&mailbox()), 0);
    assert_eq!(source.count(&mailbox()), 3);
}

#[tokio::test]
async fn a_mailbox_in_use_is_left_alone() {
    let source = Arc::new(filled(2).await);
    let dest = Arc::new(MemoryStore::new());
    let locks: Arc<dyn MailboxLocks> = Arc::new(MemoryLocks::new());
    let held = locks
        .acquire(&source.mailbox_key(&mailbox()))
        .await
        .unwrap();
    let j = job(source.clone(), dest.clone(), locks);
    assert!(matches!(
        copy::run(&j, COPY, &Progress::new(1)).await,
        Outcome::InUse(_)
    ));
    assert_eq!(dest.count(&mailbox()), 0);
    drop(held);
    done(copy::run(&j, COPY, &Progress::new(1)).await);
    assert_eq!(dest.count(&mailbox()), 2);
}

#[tokio::test]
async fn delete_source_deletes_only_after_verification() {
    let source = Arc::new(filled(4).await);
    let dest = Arc::new(MemoryStore::new());
    let j = job(source.clone(), dest.clone(), Arc::new(MemoryLocks::new()));
    let opts = Options {
        dry_run: false,
        delete_source: true,
    };
    let before = listing(&*source).await;
    let s = done(copy::run(&j, opts, &Progress::new(1)).await);
    assert_eq!(s.deleted, 4);
    assert_eq!(source.count(&mailbox()), 0);
    assert_eq!(listing(&*dest).await, before);
}

/// A source whose message 3 (index 2) reads otherwise than listed (longer)
/// from its first read on: it changed after the listing, during the copy.
#[derive(Clone)]
struct Changing {
    inner: MemoryStore,
    reads: Arc<AtomicUsize>,
}

struct ChangingDrop {
    inner: Box<dyn Maildrop>,
    reads: Arc<AtomicUsize>,
}

#[async_trait]
impl MailStore for Changing {
    fn backend(&self) -> &'static str {
        "changing"
    }
    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        Ok(Box::new(ChangingDrop {
            inner: self.inner.open(mailbox).await?,
            reads: self.reads.clone(),
        }))
    }
    async fn append(&self, mailbox: &MailboxId, m: MessageStream) -> Result<String, StoreError> {
        self.inner.append(mailbox, m).await
    }
}

#[async_trait]
impl Maildrop for ChangingDrop {
    fn messages(&self) -> &[MessageInfo] {
        self.inner.messages()
    }
    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError> {
        if index == 2 {
            self.reads.fetch_add(1, Ordering::SeqCst);
            return Ok(stream(b"Subject: 2\n\nbody 2, rewritten\n.dot\n"));
        }
        self.inner.fetch(index).await
    }
    async fn expunge(&mut self, i: &[usize], fence: u64) -> Result<ExpungeReport, StoreError> {
        self.inner.expunge(i, fence).await
    }
}

#[tokio::test]
async fn a_source_message_that_changes_during_the_copy_fails_the_mailbox_and_keeps_the_order() {
    let inner = filled(5).await;
    let source = Arc::new(Changing {
        inner: inner.clone(),
        reads: Arc::new(AtomicUsize::new(0)),
    });
    let dest = Arc::new(MemoryStore::new());
    let j = job(source.clone(), dest.clone(), Arc::new(MemoryLocks::new()));
    let opts = Options {
        dry_run: false,
        delete_source: true,
    };
    match copy::run(&j, opts, &Progress::new(1)).await {
        Outcome::Failed(why) => assert!(why.contains("changed during the copy"), "{why}"),
        other => panic!("want Failed, got {other:?}"),
    }
    // Nothing deleted from the source; the destination keeps messages 1-2
    // only, so that a re-run appends 3-5 in order.
    assert_eq!(inner.count(&mailbox()), 5);
    let kept: Vec<String> = listing(&*dest).await.into_iter().map(|m| m.uidl).collect();
    assert_eq!(kept, ["old-uidl-0", "old-uidl-1"]);

    // The source is stable again: a re-run finishes.
    let j = job(
        Arc::new(inner.clone()),
        dest.clone(),
        Arc::new(MemoryLocks::new()),
    );
    let s = done(copy::run(&j, COPY, &Progress::new(1)).await);
    assert_eq!((s.copied, s.present), (3, 2));
    assert_eq!(listing(&*dest).await, listing(&inner).await);
}

#[tokio::test]
async fn a_copy_of_an_earlier_run_that_differs_is_found_on_the_rerun() {
    let source = Arc::new(filled(3).await);
    let dest = Arc::new(MemoryStore::new());
    // An earlier run's copy of message 1: same UIDL, same size, other bytes.
    dest.import(
        &mailbox(),
        "old-uidl-0",
        stream(b"Subject: 0\n\nBODY 0\n.dot\n"),
    )
    .await
    .unwrap();
    assert_eq!(listing(&*dest).await[0], listing(&*source).await[0]);
    let j = job(source.clone(), dest.clone(), Arc::new(MemoryLocks::new()));
    let opts = Options {
        dry_run: false,
        delete_source: true,
    };
    match copy::run(&j, opts, &Progress::new(1)).await {
        Outcome::Failed(why) => {
            assert!(
                why.contains("message 1 (UIDL old-uidl-0): the copy differs"),
                "{why}"
            );
            assert!(why.contains("2 copies of this run removed"), "{why}");
        }
        other => panic!("want Failed, got {other:?}"),
    }
    assert_eq!(
        source.count(&mailbox()),
        3,
        "nothing deleted from the source"
    );
    assert_eq!(dest.count(&mailbox()), 1);
}

#[tokio::test]
async fn a_destination_that_fails_fails_the_mailbox_and_a_rerun_finishes() {
    let source = Arc::new(filled(3).await);
    let dest = Arc::new(MemoryStore::new());
    // A destination that cannot keep UIDLs: the default `import` refuses.
    let j = job(
        source.clone(),
        Arc::new(Changing {
            inner: MemoryStore::new(),
            reads: Arc::new(AtomicUsize::new(0)),
        }),
        Arc::new(MemoryLocks::new()),
    );
    match copy::run(&j, COPY, &Progress::new(1)).await {
        Outcome::Failed(why) => assert!(why.contains("cannot keep a carried UIDL"), "{why}"),
        other => panic!("want Failed, got {other:?}"),
    }
    let j = job(source.clone(), dest.clone(), Arc::new(MemoryLocks::new()));
    done(copy::run(&j, COPY, &Progress::new(1)).await);
    assert_eq!(listing(&*dest).await, listing(&*source).await);
}
