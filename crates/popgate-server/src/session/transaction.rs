//! TRANSACTION and UPDATE: the maildrop snapshot, deletion marks, RETR/TOP
//! streaming, and the commit on QUIT.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use pop3_proto::encode::MessageEncoder;
use pop3_proto::{Code, Command, response};
use popgate_lock::LockGuard;
use popgate_store::{MailboxId, Maildrop, StoreError};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{Flow, Reply, Session};
use crate::observer::Outcome;
use crate::tenant::{Tenant, TenantSession};

/// Read size for streaming a message from the store.
const CHUNK: usize = 64 * 1024;

/// A store that delivers no byte of a message for this long is given up on
/// (the backends' own timeouts should fire first).
const STORE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A logged-in session's mailbox: lock, snapshot, and deletion marks.
pub(crate) struct Mailbox {
    pub(super) tenant: Arc<Tenant>,
    _tenant_session: TenantSession,
    id: MailboxId,
    lock: Box<dyn LockGuard>,
    pub(super) lost: watch::Receiver<bool>,
    maildrop: Box<dyn Maildrop>,
    deleted: Vec<bool>,
    pub(super) login_delay: Option<u32>,
}

impl Mailbox {
    pub(super) fn new(
        tenant: Arc<Tenant>,
        tenant_session: TenantSession,
        id: MailboxId,
        lock: Box<dyn LockGuard>,
        maildrop: Box<dyn Maildrop>,
        login_delay: Option<u32>,
    ) -> Self {
        let lost = lock.lost();
        let deleted = vec![false; maildrop.messages().len()];
        Mailbox {
            tenant,
            _tenant_session: tenant_session,
            id,
            lock,
            lost,
            maildrop,
            deleted,
            login_delay,
        }
    }

    /// Messages not marked deleted, and their total size.
    pub(super) fn stat(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(n, octets), (_, m)| (n + 1, octets + m.size))
    }

    fn live(&self) -> impl Iterator<Item = (usize, &popgate_store::MessageInfo)> {
        self.maildrop
            .messages()
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// Message number → index, or the -ERR text.
    fn index(&self, n: NonZeroU32) -> Result<usize, &'static str> {
        let i = n.get() as usize - 1;
        match self.deleted.get(i) {
            None => Err("No such message."),
            Some(true) => Err("Message is deleted."),
            Some(false) => Ok(i),
        }
    }

    /// Whether the lock ran out before this command (see `LockGuard::expired`).
    pub(super) fn lock_expired(&self) -> bool {
        self.lock.expired()
    }

    /// Gives up the mailbox without committing anything.
    pub(super) async fn release(self) {
        self.lock.release().await;
    }
}

impl Session {
    /// A command in TRANSACTION, on the mailbox taken out of the state: put
    /// back after the command, but for QUIT (UPDATE consumes it).
    pub(super) async fn transaction(&mut self, mut mb: Box<Mailbox>, cmd: Command) -> Reply {
        if let Command::Quit = cmd {
            return self.update(*mb).await;
        }
        let reply = self.transaction_command(&mut mb, cmd).await;
        self.state = super::State::Transaction(mb);
        reply
    }

    async fn transaction_command(&mut self, mb: &mut Mailbox, cmd: Command) -> Reply {
        let out = &mut self.conn.out;
        match cmd {
            Command::Stat => {
                let (n, octets) = mb.stat();
                response::ok(out, &format!("{n} {octets}"));
                Reply::ok()
            }
            Command::List(Some(n)) | Command::Uidl(Some(n)) => {
                let uidl = matches!(cmd, Command::Uidl(_));
                match mb.index(n) {
                    Ok(i) => {
                        let m = &mb.maildrop.messages()[i];
                        let text = if uidl {
                            format!("{n} {}", m.uidl)
                        } else {
                            format!("{n} {}", m.size)
                        };
                        response::ok(out, &text);
                        Reply::ok()
                    }
                    Err(text) => {
                        response::err(out, None, text);
                        Reply::err()
                    }
                }
            }
            Command::List(None) | Command::Uidl(None) => {
                let uidl = matches!(cmd, Command::Uidl(_));
                self.send_listing(mb, uidl).await
            }
            Command::Dele(n) => match mb.index(n) {
                Ok(i) => {
                    mb.deleted[i] = true;
                    response::ok(out, &format!("Message {n} deleted."));
                    Reply::ok()
                }
                Err(text) => {
                    response::err(out, None, text);
                    Reply::err()
                }
            },
            Command::Rset => {
                mb.deleted.iter_mut().for_each(|d| *d = false);
                let (n, octets) = mb.stat();
                response::ok(out, &format!("{n} messages ({octets} octets)."));
                Reply::ok()
            }
            Command::Noop => {
                response::ok(out, "");
                Reply::ok()
            }
            Command::Retr(n) => self.send_message(mb, n, None).await,
            Command::Top(n, k) => self.send_message(mb, n, Some(k)).await,
            _ => self.wrong_state(),
        }
    }

    /// UIDL or LIST of the whole maildrop, streamed: lines go out in
    /// socket-sized writes as they are made, so a maildrop of 50,000
    /// messages never has its reply whole in memory.
    async fn send_listing(&mut self, mb: &Mailbox, uidl: bool) -> Reply {
        let (n, octets) = mb.stat();
        let out = &mut self.conn.out;
        if uidl {
            response::ok(out, "");
        } else {
            response::ok(out, &format!("{n} messages ({octets} octets)"));
        }
        let mut line = String::with_capacity(80);
        for (i, m) in mb.live() {
            line.clear();
            use std::fmt::Write;
            let _ = if uidl {
                write!(line, "{} {}", i + 1, m.uidl)
            } else {
                write!(line, "{} {}", i + 1, m.size)
            };
            response::line(&mut self.conn.out, &line);
            if let Err(e) = self.conn.flush_if_full().await {
                return Reply::ok_then(Flow::Close(super::conn_outcome(&e)));
            }
        }
        response::end(&mut self.conn.out);
        Reply::ok()
    }

    /// RETR and TOP: stream the message through the encoder to the client,
    /// one chunk at a time, waiting for the client to take each one.
    async fn send_message(&mut self, mb: &mut Mailbox, n: NonZeroU32, top: Option<u32>) -> Reply {
        let index = match mb.index(n) {
            Ok(i) => i,
            Err(text) => {
                response::err(&mut self.conn.out, None, text);
                return Reply::err();
            }
        };
        let size = mb.maildrop.messages()[index].size;
        let backend = mb.tenant.store.backend();
        let tenant = mb.tenant.clone();
        let started = Instant::now();
        let fetched = mb.maildrop.fetch(index).await;
        let mut stream = match fetched {
            Ok(s) => s,
            Err(e) => {
                super::observe_store(
                    &*self.shared.observer,
                    &tenant.name,
                    backend,
                    "fetch",
                    started.elapsed(),
                    Some(e.kind()),
                );
                let (code, text) = match e {
                    StoreError::Gone => (None, "Message no longer exists."),
                    ref e if e.is_temporary() => (
                        Some(Code::SysTemp),
                        "Cannot read the message, try again later.",
                    ),
                    _ => (Some(Code::SysPerm), "Cannot read the message."),
                };
                tracing::warn!(message = n, error = %e, "fetch failed");
                response::err(&mut self.conn.out, code, text);
                return Reply::err();
            }
        };
        match top {
            None => response::ok(&mut self.conn.out, &format!("{size} octets")),
            Some(_) => response::ok(&mut self.conn.out, ""),
        }
        let mut encoder = match top {
            None => MessageEncoder::retr(),
            Some(k) => MessageEncoder::top(k),
        };
        // Most mail is far smaller than a chunk: a buffer of its size (and
        // one byte to see the end) is all it needs.
        let len = usize::try_from(size).map_or(CHUNK, |s| s.saturating_add(1).min(CHUNK));
        let mut chunk = vec![0u8; len];
        loop {
            let read = tokio::time::timeout(STORE_READ_TIMEOUT, stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "store read timed out",
                    ))
                });
            let read = match read {
                Ok(read) => read,
                Err(e) => {
                    // The +OK is out: the response cannot turn into -ERR any
                    // more. Closing without the terminator tells the client the
                    // message is incomplete; nothing is deleted.
                    super::observe_store(
                        &*self.shared.observer,
                        &tenant.name,
                        backend,
                        "fetch",
                        started.elapsed(),
                        Some("temporary"),
                    );
                    tracing::warn!(message = n, error = %e, "store read failed mid-message");
                    return Reply::ok_then(Flow::Close(Outcome::Error));
                }
            };
            if read == 0 {
                break;
            }
            encoder.feed(&chunk[..read], &mut self.conn.out);
            if encoder.is_done() {
                break;
            }
            if let Err(e) = self.conn.flush_if_full().await {
                return Reply::ok_then(Flow::Close(super::conn_outcome(&e)));
            }
        }
        encoder.finish(&mut self.conn.out);
        self.shared
            .observer
            .store_operation(backend, "fetch", started.elapsed(), None);
        if top.is_none() {
            self.retrieved += 1;
        }
        Reply::ok()
    }

    /// QUIT in TRANSACTION: the UPDATE state. Expunges the marked messages,
    /// only while the lock is still ours, then releases the mailbox.
    async fn update(&mut self, mut mb: Mailbox) -> Reply {
        let marked: Vec<usize> = mb
            .deleted
            .iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(|(i, _)| i)
            .collect();
        let (ok, outcome) = if marked.is_empty() {
            response::ok(&mut self.conn.out, "Logging out.");
            (true, Outcome::Quit)
        } else if let Err(e) = mb.lock.verify().await {
            tracing::warn!(mailbox = %mb.id, error = %e, "lock lost before commit");
            self.shared.observer.lock_lost(&mb.tenant.name);
            response::err(
                &mut self.conn.out,
                Some(Code::SysTemp),
                "Mailbox lock lost; no messages were deleted.",
            );
            (false, Outcome::UpdateFailed)
        } else {
            let backend = mb.tenant.store.backend();
            let started = Instant::now();
            let result = mb.maildrop.expunge(&marked, mb.lock.fence()).await;
            super::observe_store(
                &*self.shared.observer,
                &mb.tenant.name,
                backend,
                "expunge",
                started.elapsed(),
                result.as_ref().err().map(StoreError::kind),
            );
            match result {
                Ok(report) => {
                    self.deleted = (report.deleted + report.already_gone) as u64;
                    response::ok(
                        &mut self.conn.out,
                        &format!("Logging out, {} messages deleted.", marked.len()),
                    );
                    (true, Outcome::Quit)
                }
                Err(e) => {
                    tracing::warn!(mailbox = %mb.id, error = %e, "expunge failed");
                    let text = match e {
                        StoreError::Fenced(_) => "Mailbox lock lost; no messages were deleted.",
                        _ if mb.maildrop.expunge_is_atomic() => {
                            "No messages were deleted, try again later."
                        }
                        _ => "Some deleted messages were not removed, try again later.",
                    };
                    response::err(&mut self.conn.out, Some(Code::SysTemp), text);
                    (false, Outcome::UpdateFailed)
                }
            }
        };
        mb.release().await;
        Reply {
            ok,
            flow: Flow::Close(outcome),
        }
    }
}
