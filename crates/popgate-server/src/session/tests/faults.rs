//! Faults injected under a logged-in session: a store that fails in the
//! middle of a RETR, a lock that reports its loss or runs out.

use super::*;

/// Two messages; reading the second fails after its first bytes. Records
/// whether an expunge ever ran.
struct Faulty {
    expunged: Arc<std::sync::atomic::AtomicBool>,
}

struct FaultyDrop {
    messages: Vec<MessageInfo>,
    expunged: Arc<std::sync::atomic::AtomicBool>,
}

const FIRST: &[u8] = b"Subject: one\r\n\r\nall of it\r\n";
const SECOND_START: &[u8] = b"Subject: two\r\n\r\nthe first half\r\n";

/// Yields `data`, then fails as a store connection that broke would.
struct ThenFail {
    data: &'static [u8],
    sent: bool,
}

impl tokio::io::AsyncRead for ThenFail {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.sent {
            return std::task::Poll::Ready(Err(std::io::Error::other("connection reset")));
        }
        self.sent = true;
        buf.put_slice(self.data);
        std::task::Poll::Ready(Ok(()))
    }
}

#[async_trait::async_trait]
impl MailStore for Faulty {
    fn backend(&self) -> &'static str {
        "test"
    }
    async fn open(&self, _: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        Ok(Box::new(FaultyDrop {
            messages: vec![
                MessageInfo {
                    uidl: "one".into(),
                    size: FIRST.len() as u64,
                },
                MessageInfo {
                    uidl: "two".into(),
                    size: 1000,
                },
            ],
            expunged: self.expunged.clone(),
        }))
    }
    async fn append(&self, _: &MailboxId, _: MessageStream) -> Result<String, StoreError> {
        Err(StoreError::Permanent("read-only".into()))
    }
}

#[async_trait::async_trait]
impl Maildrop for FaultyDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }
    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError> {
        Ok(match index {
            0 => Box::pin(FIRST),
            _ => Box::pin(ThenFail {
                data: SECOND_START,
                sent: false,
            }),
        })
    }
    async fn expunge(&mut self, _: &[usize], _: u64) -> Result<ExpungeReport, StoreError> {
        self.expunged
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(ExpungeReport::default())
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_that_fails_mid_retr_closes_the_session_and_deletes_nothing() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let expunged = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = Arc::new(Faulty {
        expunged: expunged.clone(),
    });
    let mut c = Client::start_with(
        &limits,
        store,
        Arc::new(popgate_lock::MemoryLocks::new()),
        Duration::ZERO,
    );
    assert!(c.line().await.unwrap().starts_with("+OK"));
    assert!(c.cmd("USER bob").await.starts_with("+OK"));
    assert!(
        c.cmd("PASS secret")
            .await
            .starts_with("+OK Logged in, 2 messages")
    );
    let first = c.multi("RETR 1").await;
    assert_eq!(first[1..], ["Subject: one", "", "all of it"]);
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    // The +OK of RETR 2 is out when the store breaks: no -ERR can follow,
    // and no final dot either, so the client knows the message is cut.
    c.send("RETR 2\r\n").await;
    let rest = c.rest().await;
    assert!(rest[0].starts_with("+OK"), "{rest:?}");
    assert!(rest.contains(&"the first half".to_string()), "{rest:?}");
    assert!(
        !rest.contains(&".".to_string()),
        "a cut message must not end with a dot: {rest:?}"
    );
    assert!(
        !expunged.load(std::sync::atomic::Ordering::SeqCst),
        "DELE 1 was never committed by a QUIT: nothing may be expunged"
    );
}

/// Locks whose guard reports a loss, or an expiry, when the test says so.
struct Losing {
    lost: watch::Sender<bool>,
    expired: Arc<std::sync::atomic::AtomicBool>,
}

struct LosingGuard {
    lost: watch::Receiver<bool>,
    expired: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl popgate_lock::MailboxLocks for Losing {
    fn backend(&self) -> &'static str {
        "test"
    }
    async fn acquire(
        &self,
        _: &str,
    ) -> Result<Box<dyn popgate_lock::LockGuard>, popgate_lock::LockError> {
        Ok(Box::new(LosingGuard {
            lost: self.lost.subscribe(),
            expired: self.expired.clone(),
        }))
    }
}

#[async_trait::async_trait]
impl popgate_lock::LockGuard for LosingGuard {
    fn fence(&self) -> u64 {
        1
    }
    fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }
    fn expired(&self) -> bool {
        self.expired.load(std::sync::atomic::Ordering::SeqCst)
    }
    async fn verify(&self) -> Result<(), popgate_lock::LockError> {
        if *self.lost.borrow() {
            Err(popgate_lock::LockError::Unavailable("lost".into()))
        } else {
            Ok(())
        }
    }
    async fn release(self: Box<Self>) {}
}

#[tokio::test(start_paused = true)]
async fn a_lock_lost_mid_session_ends_it_and_deletes_nothing() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let expunged = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (lost, _) = watch::channel(false);
    let locks = Arc::new(Losing {
        lost,
        expired: Default::default(),
    });
    let mut c = Client::start_with(
        &limits,
        Arc::new(Faulty {
            expunged: expunged.clone(),
        }),
        locks.clone(),
        Duration::ZERO,
    );
    assert!(c.line().await.unwrap().starts_with("+OK"));
    assert!(c.cmd("USER bob").await.starts_with("+OK"));
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    // The lock service says the lock is gone (expired, taken over).
    locks.lost.send_replace(true);
    assert_eq!(
        c.line().await.as_deref(),
        Some("-ERR [SYS/TEMP] Mailbox lock lost; no messages were deleted.")
    );
    assert_eq!(c.line().await, None, "the session ends");
    assert!(
        !expunged.load(std::sync::atomic::Ordering::SeqCst),
        "nothing may be expunged"
    );
}

#[tokio::test(start_paused = true)]
async fn a_kicked_session_frees_its_lock_before_it_answers_and_deletes_nothing() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let expunged = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let locks = popgate_lock::MemoryLocks::new();
    let mut c = Client::start_with(
        &limits,
        Arc::new(Faulty {
            expunged: expunged.clone(),
        }),
        Arc::new(locks.clone()),
        Duration::ZERO,
    );
    assert!(c.line().await.unwrap().starts_with("+OK"));
    assert!(c.sessions.is_empty(), "not listed before login");
    assert!(c.cmd("USER bob").await.starts_with("+OK"));
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    let listed = c.sessions.list(&crate::SessionFilter::default());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tenant, "acme");
    assert_eq!(listed[0].user, "bob@acme.example");
    assert_eq!(listed[0].client, CLIENT.parse().unwrap());
    assert!(listed[0].bytes_sent > 0, "the greeting and answers count");
    assert_eq!(locks.held(), 1);
    assert_eq!(c.sessions.kick(&[listed[0].id]).len(), 1);
    assert_eq!(
        c.line().await.as_deref(),
        Some("-ERR [SYS/TEMP] Session ended by the administrator; no messages were deleted.")
    );
    assert_eq!(locks.held(), 0, "the lock is free when the client hears");
    assert_eq!(c.line().await, None, "the session ends");
    assert!(
        !expunged.load(std::sync::atomic::Ordering::SeqCst),
        "nothing may be expunged"
    );
    // Gone from the registry once the session task has finished.
    for _ in 0..100 {
        if c.sessions.is_empty() {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    assert!(c.sessions.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_command_after_the_lease_ran_out_is_not_answered_as_the_holder() {
    // A process stopped past the ttl reads the client's line before its
    // renewal task has run: the guard says its lease is out, nothing else did.
    let limits = MemoryLimits::new(LimitsConfig::default());
    let (lost, _) = watch::channel(false);
    let locks = Arc::new(Losing {
        lost,
        expired: Default::default(),
    });
    let store = Arc::new(Store {
        delay: Duration::ZERO,
    });
    let mut c = Client::start_with(&limits, store, locks.clone(), Duration::ZERO);
    assert!(c.line().await.unwrap().starts_with("+OK"));
    assert!(c.cmd("USER bob").await.starts_with("+OK"));
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
    assert!(c.cmd("STAT").await.starts_with("+OK"));
    locks
        .expired
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        c.cmd("STAT").await,
        "-ERR [SYS/TEMP] Mailbox lock lost; no messages were deleted."
    );
    assert_eq!(c.line().await, None, "the session ends");
}
