//! The session in process over a pipe, with tokio's clock paused (waits of
//! minutes take no time and are measured exactly): the harness and the
//! pre-login bounds here; faults under a logged-in session in `faults`,
//! directed logins in `directed`, per-user locations in `location`.

use std::time::Duration;

use popgate_auth::{AuthError, Directory, Login, UserInfo};
use popgate_store::{
    ExpungeReport, MailStore, MailboxId, Maildrop, MessageInfo, MessageStream, StoreError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use super::*;
use crate::SessionConfig;
use crate::limits::{Limits, LimitsConfig, MemoryLimits, Verdict};
use crate::observer::NoObserver;
use crate::tenant::{Tenant, Tenants};

const S: fn(u64) -> Duration = Duration::from_secs;

/// Knows every user, with the password "secret"; answers after `delay`.
struct Dir {
    delay: Duration,
}

#[async_trait::async_trait]
impl Directory for Dir {
    fn kind(&self) -> &'static str {
        "test"
    }
    async fn find_user(&self, _: Login<'_>) -> Result<Option<UserInfo>, AuthError> {
        Ok(Some(UserInfo::default()))
    }
    async fn verify(&self, _: Login<'_>, password: &[u8]) -> Result<Option<UserInfo>, AuthError> {
        sleep(self.delay).await;
        Ok((password == b"secret").then(UserInfo::default))
    }
}

/// Empty mailboxes that take `delay` to open.
struct Store {
    delay: Duration,
}

#[async_trait::async_trait]
impl MailStore for Store {
    fn backend(&self) -> &'static str {
        "test"
    }
    async fn open(&self, _: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        sleep(self.delay).await;
        Ok(Box::new(Empty))
    }
    async fn append(&self, _: &MailboxId, _: MessageStream) -> Result<String, StoreError> {
        Err(StoreError::Permanent("read-only".into()))
    }
}

struct Empty;

#[async_trait::async_trait]
impl Maildrop for Empty {
    fn messages(&self) -> &[MessageInfo] {
        &[]
    }
    async fn fetch(&self, _: usize) -> Result<MessageStream, StoreError> {
        Err(StoreError::Permanent("empty".into()))
    }
    async fn expunge(&mut self, _: &[usize], _: u64) -> Result<ExpungeReport, StoreError> {
        Ok(ExpungeReport::default())
    }
}

const CLIENT: &str = "192.0.2.1:40000";

struct Client {
    io: DuplexStream,
    buf: Vec<u8>,
    /// The live-session registry the session registers in.
    sessions: Arc<crate::SessionRegistry>,
    _session: JoinHandle<()>,
}

impl Client {
    /// A session on a pipe; `verify` and `open` are how long the
    /// directory and the store take.
    fn start(limits: &Arc<MemoryLimits>, verify: Duration, open: Duration) -> Client {
        Client::start_with(
            limits,
            Arc::new(Store { delay: open }),
            Arc::new(popgate_lock::MemoryLocks::new()),
            verify,
        )
    }

    /// A session on a pipe over this store and these locks.
    fn start_with(
        limits: &Arc<MemoryLimits>,
        store: Arc<dyn MailStore>,
        locks: Arc<dyn popgate_lock::MailboxLocks>,
        verify: Duration,
    ) -> Client {
        Client::start_dir(limits, Arc::new(Dir { delay: verify }), store, locks)
    }

    /// A session on a pipe over this directory, store and locks.
    fn start_dir(
        limits: &Arc<MemoryLimits>,
        directory: Arc<dyn Directory>,
        store: Arc<dyn MailStore>,
        locks: Arc<dyn popgate_lock::MailboxLocks>,
    ) -> Client {
        let tenant = Tenant::new("acme", vec!["acme.example".into()], directory, store);
        let sessions = crate::SessionRegistry::new();
        let shared = Arc::new(Shared {
            config: SessionConfig::default(),
            tenants: Tenants::new(vec![tenant]).unwrap(),
            locks,
            observer: Arc::new(NoObserver),
            limits: Arc::new(limits.clone()),
            tls: None,
            sessions: sessions.clone(),
        });
        let listener = Arc::new(ListenerConfig {
            tls: TlsMode::None,
            plaintext_auth: true,
            default_tenant: Some("acme".into()),
            proxy_protocol: false,
            trusted_proxies: vec![],
        });
        let client: SocketAddr = CLIENT.parse().unwrap();
        let permit = limits.connect_local(client.ip(), true).unwrap();
        let (io, server) = tokio::io::duplex(1 << 16);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let session = tokio::spawn(async move {
            let _shutdown_tx = shutdown_tx;
            Session::new(
                shared,
                listener,
                Box::new(server),
                client,
                StartingTls::None,
                shutdown,
                permit,
            )
            .run()
            .await;
        });
        Client {
            io,
            buf: Vec::new(),
            sessions,
            _session: session,
        }
    }

    /// The next line, or `None` at the end of the stream.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn send(&mut self, text: &str) {
        // The server may have closed already; what it said is still read.
        let _ = self.io.write_all(text.as_bytes()).await;
    }

    async fn cmd(&mut self, command: &str) -> String {
        self.send(&format!("{command}\r\n")).await;
        self.line().await.unwrap_or_default()
    }

    /// A multi-line answer, status line first, without the final dot.
    async fn multi(&mut self, command: &str) -> Vec<String> {
        self.send(&format!("{command}\r\n")).await;
        let mut lines = Vec::new();
        while let Some(l) = self.line().await {
            if l == "." {
                break;
            }
            lines.push(l);
        }
        lines
    }

    async fn rest(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(l) = self.line().await {
            lines.push(l);
        }
        lines
    }
}

const TOO_LONG: &str = "-ERR Disconnected: login took too long.";

#[tokio::test(start_paused = true)]
async fn commands_that_are_not_logins_do_not_hold_the_connection_past_the_login_timeout() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let t0 = Instant::now();
    let mut c = Client::start(&limits, Duration::ZERO, Duration::ZERO);
    assert!(c.line().await.unwrap().starts_with("+OK"));
    // Something every 10 s, well within auth_timeout (60 s idle), and
    // nothing of it a bad command.
    sleep(S(10)).await;
    assert!(c.multi("CAPA").await[0].starts_with("+OK"));
    sleep(S(10)).await;
    assert!(c.cmd("USER bob").await.starts_with("+OK"));
    sleep(S(10)).await;
    assert!(c.multi("AUTH").await[0].starts_with("+OK"));
    sleep(S(10)).await;
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    sleep(S(5)).await;
    assert_eq!(c.cmd("*").await, "-ERR Authentication cancelled.");
    sleep(S(10)).await;
    assert!(c.multi("CAPA").await[0].starts_with("+OK"));
    // 55 s in: the next line is at 60 s, and it is the last.
    assert_eq!(c.rest().await, [TOO_LONG]);
    assert_eq!(t0.elapsed().as_secs(), 60);
    assert_eq!(limits.open_connections(), 0, "the slot is free again");
}

#[tokio::test(start_paused = true)]
async fn capa_every_50s_is_disconnected_at_the_login_timeout() {
    let limits = MemoryLimits::new(LimitsConfig {
        login_timeout: S(120),
        ..Default::default()
    });
    let t0 = Instant::now();
    let mut c = Client::start(&limits, Duration::ZERO, Duration::ZERO);
    c.line().await.unwrap();
    let mut served = 0;
    loop {
        sleep(S(50)).await;
        let answer = c.multi("CAPA").await;
        if !answer.first().is_some_and(|l| l.starts_with("+OK")) {
            assert_eq!(answer, [TOO_LONG]);
            break;
        }
        served += 1;
        assert!(served < 20, "CAPA every 50 s holds the connection for ever");
    }
    assert_eq!(served, 2);
    assert_eq!(
        t0.elapsed().as_secs(),
        150,
        "closed at 120 s, seen at 150 s"
    );
}

#[tokio::test(start_paused = true)]
async fn pre_login_commands_have_a_budget() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let mut c = Client::start(&limits, Duration::ZERO, Duration::ZERO);
    c.line().await.unwrap();
    // Pipelined: none of these is a bad command.
    let mut batch = String::new();
    for i in 0..40 {
        batch.push_str(["USER bob\r\n", "AUTH PLAIN\r\n", "*\r\n", "CAPA\r\n"][i % 4]);
    }
    c.send(&batch).await;
    let lines = c.rest().await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some("-ERR Too many commands before login, closing.")
    );
    // 32 answered (8 rounds of four), then the 33rd closes.
    let answered = lines.iter().filter(|l| l.starts_with("+OK Send")).count();
    assert_eq!(answered, 8, "{lines:?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| *l == "-ERR Authentication cancelled.")
            .count(),
        8
    );
}

#[tokio::test(start_paused = true)]
async fn failed_logins_and_bad_commands_have_their_own_caps_not_the_budget() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let mut c = Client::start(&limits, Duration::ZERO, Duration::ZERO);
    c.line().await.unwrap();
    // max_bad_commands is 20, max_auth_failures 3.
    for _ in 0..19 {
        assert!(c.cmd("BOGUS").await.starts_with("-ERR"));
    }
    for _ in 0..2 {
        assert!(c.cmd("USER bob").await.starts_with("+OK"));
        assert_eq!(
            c.cmd("PASS wrong").await,
            "-ERR [AUTH] Authentication failed."
        );
        assert_eq!(c.cmd("AUTH LOGIN").await, "+ VXNlcm5hbWU6");
        assert_eq!(c.cmd("Ym9i").await, "+ UGFzc3dvcmQ6");
        assert_eq!(c.cmd("*").await, "-ERR Authentication cancelled.");
    }
    // 6 lines counted so far (the cancelled AUTH LOGIN exchanges).
    for _ in 0..24 {
        assert!(c.multi("CAPA").await[0].starts_with("+OK"));
    }
    assert!(c.cmd("USER bob").await.starts_with("+OK"));
    assert!(c.cmd("PASS secret").await.starts_with("+OK Logged in"));
}

#[tokio::test(start_paused = true)]
async fn a_penalty_does_not_outlast_the_login_timeout() {
    let limits = MemoryLimits::new(LimitsConfig {
        penalty_base: S(300),
        penalty_max: S(300),
        login_timeout: S(20),
        ..Default::default()
    });
    // A recent failure from this address: the next attempt waits 300 s.
    let a = limits
        .attempt(CLIENT.parse::<SocketAddr>().unwrap().ip(), None)
        .await;
    limits.finish(a, Verdict::Failure).await;
    let t0 = Instant::now();
    let mut c = Client::start(&limits, Duration::ZERO, Duration::ZERO);
    c.line().await.unwrap();
    assert!(c.cmd("USER bob").await.starts_with("+OK"));
    c.send("PASS secret\r\n").await;
    assert_eq!(c.rest().await, [TOO_LONG]);
    assert_eq!(t0.elapsed().as_secs(), 20);
}

#[tokio::test(start_paused = true)]
async fn a_directory_that_hangs_does_not_hold_the_connection() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let t0 = Instant::now();
    let mut c = Client::start(&limits, S(3600), Duration::ZERO);
    c.line().await.unwrap();
    c.send("AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n").await;
    assert_eq!(c.rest().await, [TOO_LONG]);
    assert_eq!(t0.elapsed().as_secs(), 60);
}

#[tokio::test(start_paused = true)]
async fn a_verified_login_completes_and_then_the_pre_login_bounds_are_gone() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let t0 = Instant::now();
    // The mailbox takes 30 s to open: verified at 50 s, open at 80 s.
    let mut c = Client::start(&limits, Duration::ZERO, S(30));
    c.line().await.unwrap();
    sleep(S(50)).await;
    assert!(c.cmd("USER bob").await.starts_with("+OK"));
    assert_eq!(
        c.cmd("PASS secret").await,
        "+OK Logged in, 0 messages (0 octets)."
    );
    assert_eq!(t0.elapsed().as_secs(), 80);
    sleep(S(300)).await;
    for _ in 0..100 {
        assert_eq!(c.cmd("NOOP").await, "+OK");
    }
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
}

/// Records the mailboxes it opens.
#[derive(Default)]
struct Opened(std::sync::Mutex<Vec<MailboxId>>);

#[async_trait::async_trait]
impl MailStore for Opened {
    fn backend(&self) -> &'static str {
        "test"
    }
    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        self.0.lock().unwrap().push(mailbox.clone());
        Ok(Box::new(Empty))
    }
    async fn append(&self, _: &MailboxId, _: MessageStream) -> Result<String, StoreError> {
        Err(StoreError::Permanent("read-only".into()))
    }
}

mod directed;
mod faults;
mod listing;
mod location;
