//! One POP3 session: the read loop, the state machine, and dispatch.
//!
//! AUTHORIZATION → TRANSACTION → UPDATE as RFC 1939 says. Responses are
//! appended to the connection's buffer and written when the pipelined input
//! is used up (or the buffer is large), so a pipelining client gets its
//! answers in as few writes as possible.
//!
//! Before login a client is bounded whatever it sends: the whole
//! AUTHORIZATION state, from the greeting to verified credentials, ends
//! within [`LimitsConfig::login_timeout`](crate::limits::LimitsConfig)
//! (reads, STLS handshakes, SASL exchanges, penalty sleeps and directory
//! calls included), and it may send at most `max_login_commands` lines
//! besides those of failed logins and bad commands (which have their own
//! caps, `max_auth_failures` and `max_bad_commands`).

mod directed;
mod login;
mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use pop3_proto::capa::Capabilities;
use pop3_proto::{Code, Command, Line, LineReader, response};
use tokio::sync::watch;

use crate::conn::{Conn, ConnError, Io};
use crate::limits::ConnectionPermit;
use crate::observer::{Outcome, SessionId, SessionObserver, SessionSummary};
use crate::sessions::Registration;
use crate::{ListenerConfig, Shared, TlsMode};

use login::Sasl;
use transaction::Mailbox;

/// What an idle session reads into: room for a usual command line.
const SMALL_READ: usize = 256;

/// What a session reads into while the client sends more than that.
const BIG_READ: usize = 4096;

/// What the loop does after a command.
pub(crate) enum Flow {
    Continue,
    Close(Outcome),
}

/// What a command's handler answered, and what the loop does next.
pub(crate) struct Reply {
    /// Whether the answer began with `+` (`+OK`, or a SASL continuation):
    /// the `ok` of the command metric. False when the connection failed
    /// before anything was answered.
    ok: bool,
    flow: Flow,
}

impl Reply {
    /// A `+` answer; the session goes on.
    fn ok() -> Self {
        Reply::ok_then(Flow::Continue)
    }

    /// A `+` answer, then `flow`.
    fn ok_then(flow: Flow) -> Self {
        Reply { ok: true, flow }
    }

    /// A `-ERR` answer (or none); the session goes on.
    fn err() -> Self {
        Reply::err_then(Flow::Continue)
    }

    /// A `-ERR` answer (or none), then `flow`.
    fn err_then(flow: Flow) -> Self {
        Reply { ok: false, flow }
    }
}

/// How the connection is protected when the session starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartingTls {
    /// In clear (STLS may change that).
    None,
    /// Under popgate's own TLS (an implicit-TLS listener).
    Local,
    /// The client spoke TLS to a trusted balancer, which terminated it and
    /// said so in its PROXY v2 header (PP2_TYPE_SSL). It counts as TLS for
    /// `plaintext_auth` and STLS, and the session's span says `tls_via="proxy"`.
    Proxy,
}

enum State {
    Authorization {
        user: Option<String>,
    },
    /// Waiting for the client's next SASL line.
    Sasl(Sasl),
    Transaction(Box<Mailbox>),
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    listener: Arc<ListenerConfig>,
    conn: Conn,
    reader: LineReader,
    state: State,
    id: SessionId,
    client: SocketAddr,
    tls_active: bool,
    /// TLS terminated by a trusted balancer ([`StartingTls::Proxy`]).
    tls_via_proxy: bool,
    apop_timestamp: Option<String>,
    auth_failures: u32,
    bad_commands: u32,
    /// Lines before login counted against `max_login_commands`.
    login_commands: u32,
    /// Of those, the lines of the login in progress (USER, AUTH, SASL
    /// steps): given back if it fails, as a failed login has its own cap.
    login_attempt_lines: u32,
    /// Set once the credentials of the login in progress are verified: from
    /// then on the login timeout no longer cuts it short (taking the lock
    /// and opening the mailbox are not interrupted half way).
    login_verified: Arc<AtomicBool>,
    commands: u64,
    retrieved: u64,
    deleted: u64,
    tenant: Option<String>,
    user: Option<String>,
    /// Whether a login completed (the session reached TRANSACTION).
    logged_in: bool,
    /// The session's entry in the live-session registry, from login on.
    registration: Option<Registration>,
    /// Turns true when the server's shutdown grace is over.
    shutdown: watch::Receiver<bool>,
    /// Counts this connection against the caps until the session ends.
    _permit: ConnectionPermit,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        listener: Arc<ListenerConfig>,
        io: Box<dyn Io>,
        client: SocketAddr,
        tls: StartingTls,
        shutdown: watch::Receiver<bool>,
        permit: ConnectionPermit,
    ) -> Self {
        let id = SessionId::next();
        let apop_possible = shared.tenants.iter().any(|t| t.directory.supports_apop());
        let apop_timestamp = apop_possible.then(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            format!(
                "<{}.{}.{}@{}>",
                std::process::id(),
                id.seq,
                nanos,
                shared.config.hostname
            )
        });
        let conn = Conn::new(io, shared.config.send_timeout)
            .with_shutdown(shutdown.clone())
            .with_observer(shared.observer.clone());
        Session {
            shared,
            listener,
            conn,
            reader: LineReader::default(),
            state: State::Authorization { user: None },
            id,
            client,
            tls_active: tls != StartingTls::None,
            tls_via_proxy: tls == StartingTls::Proxy,
            apop_timestamp,
            auth_failures: 0,
            bad_commands: 0,
            login_commands: 0,
            login_attempt_lines: 0,
            login_verified: Arc::default(),
            commands: 0,
            retrieved: 0,
            deleted: 0,
            tenant: None,
            user: None,
            logged_in: false,
            registration: None,
            shutdown,
            _permit: permit,
        }
    }

    /// Serves the connection to its end and records the outcome, inside a
    /// `session` span: its id, the client (after PROXY), and once the
    /// credentials are verified the tenant and the user. Every line the
    /// session logs carries them, so its events name none of them again
    /// (a JSON line has each field once: see `docs/logging.md`).
    ///
    /// Not an `async fn`: that would keep a second copy of the session in
    /// its future next to `run_in_span`'s, for the session's whole life.
    pub(crate) fn run(self) -> impl std::future::Future<Output = ()> + Send {
        let span = tracing::info_span!(
            "session",
            id = %self.id,
            client = %self.client,
            tenant = tracing::field::Empty,
            user = tracing::field::Empty,
            tls_via = tracing::field::Empty,
        );
        if self.tls_via_proxy {
            span.record("tls_via", "proxy");
        }
        tracing::Instrument::instrument(self.run_in_span(), span)
    }

    async fn run_in_span(mut self) {
        let started = Instant::now();
        self.shared.observer.session_started();
        tracing::debug!(tls = self.tls_active, "session started");
        let mut greeting = String::from("popgate ready.");
        if let Some(ts) = &self.apop_timestamp {
            greeting.push(' ');
            greeting.push_str(ts);
        }
        self.conn.busy();
        response::ok(&mut self.conn.out, &greeting);
        let outcome = self.serve().await;
        // Whatever happened, a session that did not commit deletes nothing:
        // dropping the maildrop and the lock guard leaves the store as it was.
        if let Some(mb) = self.take_mailbox() {
            mb.release().await;
        }
        self.registration = None;
        self.conn.report_held();
        let summary = SessionSummary {
            id: self.id,
            client: self.client,
            tenant: self.tenant.take(),
            user: self.user.take(),
            commands: self.commands,
            bytes_sent: self.conn.bytes_sent,
            retrieved: self.retrieved,
            deleted: self.deleted,
            duration: started.elapsed(),
            outcome,
            logged_in: self.logged_in,
        };
        // Id, client, tenant and user are the span's.
        tracing::info!(
            tls = self.tls_active,
            commands = summary.commands,
            bytes_sent = summary.bytes_sent,
            retrieved = summary.retrieved,
            deleted = summary.deleted,
            duration_ms = summary.duration.as_millis() as u64,
            outcome = summary.outcome.as_str(),
            "session end"
        );
        self.shared.observer.session_ended(&summary);
    }

    async fn serve(&mut self) -> Outcome {
        // An idle session waits with only `small` to read into (a command
        // line fits); `big` exists only while reads keep filling what they
        // read into (pipelined input), and goes once one does not.
        let mut small = [0u8; SMALL_READ];
        let mut big: Option<Vec<u8>> = None;
        let login_deadline =
            tokio::time::Instant::now() + self.shared.limits.config().login_timeout;
        // When the client started a command line that is not complete yet.
        let mut partial_since: Option<tokio::time::Instant> = None;
        loop {
            while let Some(line) = self.reader.next_line() {
                partial_since = None;
                let flow = if let State::Transaction(mb) = &self.state {
                    // A process stopped past the ttl reads its clients' lines
                    // before its renewal task runs: no answer as the holder.
                    if mb.lock_expired() {
                        return Box::pin(self.end_lock_lost()).await;
                    }
                    // Boxed: a command's future (a login, a RETR) is far
                    // larger than an idle session's wait, and exists only
                    // while the command runs.
                    Box::pin(self.handle_line(line)).await
                } else {
                    match Box::pin(self.handle_line_before_login(line, login_deadline)).await {
                        Some(flow) => flow,
                        None => return Box::pin(self.login_took_too_long()).await,
                    }
                };
                if let Flow::Close(outcome) = flow {
                    Box::pin(self.conn.close()).await;
                    return outcome;
                }
                if let Err(e) = self.conn.flush_if_full().await {
                    return conn_outcome(&e);
                }
            }
            if let Err(e) = self.conn.flush().await {
                return conn_outcome(&e);
            }
            self.conn.idle();
            self.reader.shrink_idle();
            let logged_in = matches!(self.state, State::Transaction(_));
            let mut timeout = if logged_in {
                self.shared.config.idle_timeout
            } else {
                self.shared.config.auth_timeout
            };
            if self.reader.mid_line() {
                let since = *partial_since.get_or_insert_with(tokio::time::Instant::now);
                timeout = timeout.min(
                    self.shared
                        .config
                        .command_timeout
                        .saturating_sub(since.elapsed()),
                );
            } else {
                partial_since = None;
            }
            // Before login, the login deadline bounds every wait.
            let login_left = login_deadline.saturating_duration_since(tokio::time::Instant::now());
            let login_bound = !logged_in && login_left <= timeout;
            if login_bound {
                timeout = login_left;
            }
            let lost = lock_lost(&mut self.state);
            let kicked = kicked(&mut self.registration);
            let buf: &mut [u8] = match &mut big {
                Some(big) => big,
                None => &mut small,
            };
            let read = tokio::time::timeout(timeout, self.conn.read(buf));
            let shutdown_rx = &mut self.shutdown;
            let shutdown = async move {
                let _ = shutdown_rx.wait_for(|&stop| stop).await;
            };
            let n = tokio::select! {
                r = read => match r {
                    Ok(Ok(0)) => return Outcome::Dropped,
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => return Outcome::Error,
                    Err(_) if login_bound => return Box::pin(self.login_took_too_long()).await,
                    Err(_) => {
                        response::err(&mut self.conn.out, None, "Disconnected for inactivity.");
                        Box::pin(self.conn.close()).await;
                        return Outcome::Timeout;
                    }
                },
                () = lost => return Box::pin(self.end_lock_lost()).await,
                () = kicked => return Box::pin(self.end_kicked()).await,
                () = shutdown => {
                    response::err(&mut self.conn.out, Some(Code::SysTemp), "Server shutting down; no messages were deleted.");
                    Box::pin(self.conn.close()).await;
                    return Outcome::Shutdown;
                }
            };
            let data = big.as_deref().unwrap_or(&small[..]);
            self.reader.push(&data[..n]);
            if n < data.len() {
                big = None;
            } else if big.is_none() {
                big = Some(vec![0u8; BIG_READ]);
            }
            self.conn.busy();
        }
    }

    /// Ends a session whose mailbox lock is lost.
    async fn end_lock_lost(&mut self) -> Outcome {
        if let Some(tenant) = &self.tenant {
            self.shared.observer.lock_lost(tenant);
        }
        response::err(
            &mut self.conn.out,
            Some(Code::SysTemp),
            "Mailbox lock lost; no messages were deleted.",
        );
        self.conn.close().await;
        Outcome::LockLost
    }

    /// Handles a line before login, unless the login deadline passes first
    /// (`None`), wherever the command is: a penalty sleep, a TLS handshake,
    /// a directory call. Once the credentials are verified the command runs
    /// to its end.
    async fn handle_line_before_login(
        &mut self,
        line: Line,
        deadline: tokio::time::Instant,
    ) -> Option<Flow> {
        let verified = self.login_verified.clone();
        verified.store(false, Ordering::Relaxed);
        let expired = async move {
            tokio::time::sleep_until(deadline).await;
            if verified.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            flow = self.handle_line(line) => Some(flow),
            () = expired => None,
        }
    }

    /// Ends a session an administrator kicked: as a lost lock ends one
    /// (nothing deleted), but the lock is freed before the client hears of
    /// it, so its next login finds the mailbox free.
    async fn end_kicked(&mut self) -> Outcome {
        if let Some(mb) = self.take_mailbox() {
            mb.release().await;
        }
        tracing::info!("session kicked by an administrator");
        response::err(
            &mut self.conn.out,
            Some(Code::SysTemp),
            "Session ended by the administrator; no messages were deleted.",
        );
        self.conn.close().await;
        Outcome::Kicked
    }

    /// Ends a session whose login took longer than the login timeout.
    async fn login_took_too_long(&mut self) -> Outcome {
        tracing::debug!("login timeout");
        response::err(
            &mut self.conn.out,
            None,
            "Disconnected: login took too long.",
        );
        self.conn.close().await;
        Outcome::Timeout
    }

    async fn handle_line(&mut self, line: Line) -> Flow {
        self.commands += 1;
        if matches!(self.state, State::Transaction(_)) {
            return self.handle_command_line(line).await;
        }
        // Before login every line counts against the budget, whatever it is
        // (CAPA, USER, a bare AUTH, a cancelled SASL exchange), except a bad
        // command and the lines of a failed login: those have their caps.
        self.login_commands += 1;
        if self.login_commands > self.shared.limits.config().max_login_commands {
            response::err(
                &mut self.conn.out,
                None,
                "Too many commands before login, closing.",
            );
            return Flow::Close(Outcome::Abuse);
        }
        let (failures, bad) = (self.auth_failures, self.bad_commands);
        let was_pending = login_pending(&self.state);
        let was_sasl = matches!(self.state, State::Sasl(_));
        let flow = self.handle_command_line(line).await;
        let pending = login_pending(&self.state);
        if self.auth_failures > failures {
            self.login_commands = self
                .login_commands
                .saturating_sub(1 + self.login_attempt_lines);
            self.login_attempt_lines = 0;
        } else if self.bad_commands > bad {
            self.login_commands = self.login_commands.saturating_sub(1);
        } else if pending && (!was_pending || was_sasl) {
            // USER, AUTH without an initial response, a SASL LOGIN step.
            self.login_attempt_lines += 1;
        }
        if !pending {
            self.login_attempt_lines = 0;
        }
        flow
    }

    async fn handle_command_line(&mut self, line: Line) -> Flow {
        let bytes = match line {
            Line::TooLong => {
                response::err(&mut self.conn.out, None, "Line too long.");
                return self.bad_command();
            }
            Line::Complete(bytes) => bytes,
        };
        match std::mem::replace(&mut self.state, State::Authorization { user: None }) {
            State::Sasl(step) => return self.sasl_step(step, &bytes).await.flow,
            state => self.state = state,
        }
        match pop3_proto::command::parse(&bytes) {
            Ok(cmd) => self.dispatch(cmd).await,
            Err(e) => {
                response::err(&mut self.conn.out, None, &e.to_string());
                self.observe_command("unknown", false);
                self.bad_command()
            }
        }
    }

    async fn dispatch(&mut self, cmd: Command) -> Flow {
        let name = cmd.name();
        let reply = if let Command::Capa = cmd {
            self.capabilities().write(&mut self.conn.out);
            Reply::ok()
        } else if let Some(mb) = self.take_mailbox() {
            self.transaction(mb, cmd).await
        } else if let Command::Quit = cmd {
            response::ok(&mut self.conn.out, "Logging out.");
            Reply::ok_then(Flow::Close(Outcome::Quit))
        } else {
            self.authorization(cmd).await
        };
        self.observe_command(name, reply.ok);
        reply.flow
    }

    /// Takes the mailbox out of TRANSACTION (the state is AUTHORIZATION
    /// until it is put back); in any other state, leaves it as it is.
    fn take_mailbox(&mut self) -> Option<Box<Mailbox>> {
        match std::mem::replace(&mut self.state, State::Authorization { user: None }) {
            State::Transaction(mb) => Some(mb),
            state => {
                self.state = state;
                None
            }
        }
    }

    fn observe_command(&self, name: &'static str, ok: bool) {
        self.shared
            .observer
            .command(self.tenant.as_deref(), name, ok);
    }

    /// Answers a command given in the wrong state.
    fn wrong_state(&mut self) -> Reply {
        response::err(&mut self.conn.out, None, "Command not valid in this state.");
        Reply::err_then(self.bad_command())
    }

    /// Counts a malformed or misplaced command; too many close the session.
    fn bad_command(&mut self) -> Flow {
        self.bad_commands += 1;
        if self.bad_commands >= self.shared.config.max_bad_commands {
            response::err(&mut self.conn.out, None, "Too many bad commands, closing.");
            return Flow::Close(Outcome::Abuse);
        }
        Flow::Continue
    }

    /// Whether passwords may cross this connection now.
    fn plaintext_allowed(&self) -> bool {
        self.tls_active || self.listener.plaintext_auth
    }

    fn capabilities(&self) -> Capabilities {
        let tenant = match &self.state {
            State::Transaction(mb) => Some(mb.tenant.clone()),
            _ => self
                .listener
                .default_tenant
                .as_deref()
                .and_then(|t| self.shared.tenants.get(t))
                .cloned(),
        };
        let login_allowed =
            self.plaintext_allowed() && !matches!(self.state, State::Transaction(_));
        Capabilities {
            user: login_allowed,
            sasl: if login_allowed {
                vec!["PLAIN", "LOGIN"]
            } else {
                vec![]
            },
            stls: self.listener.tls == TlsMode::StartTls && !self.tls_active,
            implementation: self.shared.config.implementation.clone(),
            expire: tenant.as_ref().and_then(|t| t.expire),
            login_delay: match &self.state {
                State::Transaction(mb) => mb.login_delay,
                _ => tenant.as_ref().and_then(|t| t.login_delay),
            },
        }
    }
}

/// Whether a login is half way: USER given, or a SASL exchange going on.
fn login_pending(state: &State) -> bool {
    matches!(
        state,
        State::Sasl(_) | State::Authorization { user: Some(_) }
    )
}

/// Resolves when the session's mailbox lock is lost; never outside TRANSACTION.
async fn lock_lost(state: &mut State) {
    match state {
        State::Transaction(mb) => {
            let sender_gone = mb.lost.wait_for(|&lost| lost).await.is_err();
            if sender_gone {
                // The lock backend dropped its sender: nothing will report a loss.
                std::future::pending::<()>().await;
            }
        }
        _ => std::future::pending().await,
    }
}

/// Resolves when an administrator kicks the session; never before login.
async fn kicked(registration: &mut Option<Registration>) {
    match registration {
        Some(r) => r.kicked().await,
        None => std::future::pending().await,
    }
}

/// Reports a store operation of a session of `tenant`; a failure also
/// counts against the tenant.
pub(crate) fn observe_store(
    observer: &dyn SessionObserver,
    tenant: &str,
    backend: &'static str,
    op: &'static str,
    elapsed: std::time::Duration,
    error: Option<&'static str>,
) {
    observer.store_operation(backend, op, elapsed, error);
    if error.is_some() {
        observer.tenant_store_error(tenant, op);
    }
}

fn conn_outcome(e: &ConnError) -> Outcome {
    match e {
        ConnError::SendTimeout(_) => Outcome::Timeout,
        ConnError::Io(_) => Outcome::Error,
        ConnError::Shutdown => Outcome::Shutdown,
    }
}

#[cfg(test)]
mod tests;
