//! AUTHORIZATION: USER/PASS, APOP, SASL PLAIN and LOGIN, and what a
//! successful login does: tenant cap, LOGIN-DELAY, mailbox lock, snapshot.

use std::sync::Arc;
use std::time::Instant;

use pop3_proto::sasl::{base64_decode, decode_plain};
use pop3_proto::{Code, Command, response};
use popgate_auth::{Login, UserInfo};
use popgate_lock::LockError;
use popgate_store::{MailboxId, StoreError};

use super::transaction::Mailbox;
use super::{Flow, Reply, Session, State};
use crate::Tenant;
use crate::TlsMode;
use crate::limits::Verdict;
use crate::observer::{LockResult, LoginResult, Outcome};

/// A SASL exchange waiting for the client's next line.
pub(crate) enum Sasl {
    Plain,
    LoginUser,
    LoginPass { user: String },
}

const FAILED: &str = "Authentication failed.";

/// Credentials the directory accepted.
struct Verified {
    tenant: Arc<Tenant>,
    mailbox: MailboxId,
    user: UserInfo,
}

/// What the client proved.
enum Proof<'a> {
    Password(&'a [u8]),
    Apop { timestamp: &'a str, digest: &'a str },
}

impl Session {
    pub(super) async fn authorization(&mut self, cmd: Command) -> Reply {
        match cmd {
            Command::User(name) => {
                if !self.plaintext_allowed() {
                    return self.plaintext_refused();
                }
                self.state = State::Authorization { user: Some(name) };
                response::ok(&mut self.conn.out, "Send your password.");
                Reply::ok()
            }
            Command::Pass(password) => {
                // Only AUTHORIZATION dispatches here: a SASL line is
                // answered by `sasl_step`, TRANSACTION by `transaction`.
                let user = match &mut self.state {
                    State::Authorization { user } => user.take(),
                    State::Sasl(_) | State::Transaction(_) => None,
                };
                let Some(user) = user else {
                    response::err(&mut self.conn.out, None, "Send USER first.");
                    return Reply::err_then(self.bad_command());
                };
                if !self.plaintext_allowed() {
                    return self.plaintext_refused();
                }
                self.login("user", &user, Proof::Password(&password.0))
                    .await
            }
            Command::Apop { user, digest } => {
                if !self.plaintext_allowed() {
                    return self.plaintext_refused();
                }
                let Some(timestamp) = self.apop_timestamp.clone() else {
                    response::err(&mut self.conn.out, None, "APOP is not available.");
                    return Reply::err();
                };
                self.login(
                    "apop",
                    &user,
                    Proof::Apop {
                        timestamp: &timestamp,
                        digest: &digest,
                    },
                )
                .await
            }
            Command::Auth {
                mechanism: None, ..
            } => {
                response::ok(&mut self.conn.out, "Supported mechanisms follow.");
                if self.plaintext_allowed() {
                    response::line(&mut self.conn.out, "PLAIN");
                    response::line(&mut self.conn.out, "LOGIN");
                }
                response::end(&mut self.conn.out);
                Reply::ok()
            }
            Command::Auth {
                mechanism: Some(mech),
                initial,
            } => {
                if !self.plaintext_allowed() {
                    return self.plaintext_refused();
                }
                match mech.as_str() {
                    "PLAIN" => match initial {
                        Some(resp) => self.sasl_plain(&resp.0).await,
                        None => {
                            self.state = State::Sasl(Sasl::Plain);
                            response::continuation(&mut self.conn.out, "");
                            Reply::ok()
                        }
                    },
                    "LOGIN" => match initial {
                        // RFC 4616-style initial response for LOGIN carries the user name.
                        Some(resp) => self.sasl_step_login_user(&resp.0),
                        None => {
                            self.state = State::Sasl(Sasl::LoginUser);
                            response::continuation(&mut self.conn.out, "VXNlcm5hbWU6");
                            Reply::ok()
                        }
                    },
                    _ => {
                        response::err(
                            &mut self.conn.out,
                            None,
                            "Unsupported authentication mechanism.",
                        );
                        Reply::err()
                    }
                }
            }
            Command::Stls => self.starttls().await,
            _ => self.wrong_state(),
        }
    }

    /// RFC 2595 STLS: answer, then hand the socket to the TLS handshake.
    /// Whatever the client pipelined after STLS is dropped, so nothing sent
    /// in clear can be taken as a command of the protected session.
    async fn starttls(&mut self) -> Reply {
        let tls = match &self.shared.tls {
            Some(tls) if self.listener.tls == TlsMode::StartTls && !self.tls_active => tls.clone(),
            _ => {
                response::err(&mut self.conn.out, None, "STLS is not available now.");
                return Reply::err_then(self.bad_command());
            }
        };
        self.state = State::Authorization { user: None };
        response::ok(&mut self.conn.out, "Begin TLS negotiation now.");
        // From here on the answer was +OK, whatever the handshake does.
        if self.conn.flush().await.is_err() {
            return Reply::ok_then(Flow::Close(Outcome::Error));
        }
        self.reader.clear();
        let plain = std::mem::replace(
            &mut self.conn.io,
            Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
        );
        let timeout = self.shared.config.command_timeout;
        match tokio::time::timeout(timeout, tls.acceptor().accept(plain)).await {
            Ok(Ok(stream)) => {
                self.shared.observer.tls_handshake("starttls");
                self.conn.io = Box::new(stream);
                self.tls_active = true;
                Reply::ok()
            }
            Ok(Err(e)) => {
                let reason = crate::tls::failure_reason(&e);
                self.shared
                    .observer
                    .tls_handshake_failed("starttls", reason);
                // As for implicit TLS: a client gone before the handshake
                // ends is at debug (see listener.rs).
                if reason == "eof" {
                    tracing::debug!(mode = "starttls", reason, error = %e, "TLS handshake failed");
                } else {
                    tracing::info!(mode = "starttls", reason, error = %e, "TLS handshake failed");
                }
                Reply::ok_then(Flow::Close(Outcome::Error))
            }
            Err(_) => {
                self.shared
                    .observer
                    .tls_handshake_failed("starttls", "timeout");
                tracing::info!(
                    mode = "starttls",
                    reason = "timeout",
                    "TLS handshake failed"
                );
                Reply::ok_then(Flow::Close(Outcome::Timeout))
            }
        }
    }

    fn plaintext_refused(&mut self) -> Reply {
        self.state = State::Authorization { user: None };
        response::err(
            &mut self.conn.out,
            Some(Code::Auth),
            "Plaintext authentication disallowed on non-secure connections; use STLS.",
        );
        Reply::err_then(self.bad_command())
    }

    /// The client's answer to a SASL continuation.
    /// The state is AUTHORIZATION again while `step` is answered.
    pub(super) async fn sasl_step(&mut self, step: Sasl, line: &[u8]) -> Reply {
        if line == b"*" {
            response::err(&mut self.conn.out, None, "Authentication cancelled.");
            return Reply::err();
        }
        let line = if line == b"=" { &b""[..] } else { line };
        match step {
            Sasl::Plain => self.sasl_plain(line).await,
            Sasl::LoginUser => self.sasl_step_login_user(line),
            Sasl::LoginPass { user } => match base64_decode(line) {
                Some(password) => self.login("login", &user, Proof::Password(&password)).await,
                None => self.sasl_malformed(),
            },
        }
    }

    fn sasl_step_login_user(&mut self, line: &[u8]) -> Reply {
        match base64_decode(line).and_then(|u| String::from_utf8(u).ok()) {
            Some(user) => {
                self.state = State::Sasl(Sasl::LoginPass { user });
                response::continuation(&mut self.conn.out, "UGFzc3dvcmQ6");
                Reply::ok()
            }
            None => self.sasl_malformed(),
        }
    }

    async fn sasl_plain(&mut self, response_line: &[u8]) -> Reply {
        let Some(plain) = decode_plain(response_line) else {
            return self.sasl_malformed();
        };
        // Acting as another user (proxy authorization) is not offered.
        if !plain.authzid.is_empty() && !plain.authzid.eq_ignore_ascii_case(&plain.authcid) {
            tracing::debug!(
                authzid = %crate::logsafe::account(&plain.authzid),
                "SASL PLAIN: acting as another user is not offered"
            );
            return self.fail_login("plain", None, &plain.authcid).await;
        }
        self.login("plain", &plain.authcid, Proof::Password(&plain.password.0))
            .await
    }

    fn sasl_malformed(&mut self) -> Reply {
        response::err(&mut self.conn.out, None, "Invalid SASL response.");
        Reply::err_then(self.bad_command())
    }

    /// Checks credentials, then opens the mailbox.
    async fn login(&mut self, mechanism: &'static str, login: &str, proof: Proof<'_>) -> Reply {
        match self.authenticate(mechanism, login, proof).await {
            Ok(verified) => self.open_mailbox(mechanism, verified).await,
            Err(reply) => reply,
        }
    }

    /// Resolves the login to a tenant and a mailbox, sits out the
    /// brute-force penalty, and verifies the proof; the answer to a login
    /// that is not verified is the error.
    async fn authenticate(
        &mut self,
        mechanism: &'static str,
        login: &str,
        proof: Proof<'_>,
    ) -> Result<Verified, Reply> {
        let resolved = self
            .shared
            .tenants
            .resolve(login, self.listener.default_tenant.as_deref());
        // Brute-force throttling: the attempt is counted before it is
        // checked. Recent failures from this address prefix or for this
        // account delay the check itself; attempts still in flight ahead of
        // this one only hold its answer back until they have ended, and
        // cost it nothing if they succeed. A name that is no login counts
        // on the address only.
        let account = resolved.as_ref().map(|(_, m)| m.to_string());
        let attempt = self
            .shared
            .limits
            .attempt(self.client.ip(), account.as_deref())
            .await;
        let upfront = !attempt.upfront().is_zero();
        if upfront {
            self.sit_out(&attempt).await?;
        }
        let verified = match &resolved {
            Some((tenant, mailbox)) => {
                let who = Login {
                    local: &mailbox.local,
                    domain: &mailbox.domain,
                    client: Some(self.client.ip()),
                };
                Some(match proof {
                    Proof::Password(p) => tenant.directory.verify(who, p).await,
                    Proof::Apop { timestamp, digest } => {
                        tenant.directory.verify_apop(who, timestamp, digest).await
                    }
                })
            }
            None => {
                self.spend_a_failures_time(&proof).await;
                None
            }
        };
        if !upfront {
            self.sit_out(&attempt).await?;
        }
        let (Some((tenant, mailbox)), Some(verified)) = (resolved, verified) else {
            self.shared.limits.finish(attempt, Verdict::Failure).await;
            tracing::debug!("no tenant serves the login's domain, or the name is no login");
            return Err(self.fail_login(mechanism, None, login).await);
        };
        let user: UserInfo = match verified {
            Ok(Some(user)) => user,
            Ok(None) => {
                self.shared.limits.finish(attempt, Verdict::Failure).await;
                return Err(self.fail_login(mechanism, Some(&tenant.name), login).await);
            }
            Err(e) => {
                self.shared.limits.finish(attempt, Verdict::Unchecked).await;
                tracing::warn!(tenant = %tenant.name, error = %e, "directory failure");
                return Err(self.refuse_login(
                    &tenant.name,
                    mechanism,
                    LoginResult::TempError,
                    Code::SysTemp,
                    "Authentication service unavailable, try again later.",
                ));
            }
        };
        // The directory may send the login to another mailbox of its tenant,
        // or name where its mail is.
        let mailbox = match super::directed::mailbox(&tenant, mailbox, &user) {
            Ok(m) => m,
            Err(refusal) => {
                self.shared.limits.finish(attempt, Verdict::Unchecked).await;
                return Err(self.refuse_login(
                    &tenant.name,
                    mechanism,
                    refusal.result,
                    refusal.code,
                    refusal.text,
                ));
            }
        };
        // Verified: the login timeout no longer cuts this login short.
        self.login_verified
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.limits.finish(attempt, Verdict::Success).await;
        self.tenant = Some(tenant.name.clone());
        self.conn.report_for(&tenant.name);
        self.user = Some(mailbox.login());
        let span = tracing::Span::current();
        span.record("tenant", tenant.name.as_str());
        span.record("user", mailbox.login().as_str());
        Ok(Verified {
            tenant,
            mailbox,
            user,
        })
    }

    /// Sits out what is left of an attempt's penalty once the attempts
    /// ahead of it have ended (see `Limits::settle`).
    async fn sit_out(&mut self, attempt: &crate::limits::Attempt) -> Result<(), Reply> {
        if attempt.penalty.is_zero() {
            return Ok(());
        }
        // What the client pipelined before is answered before the wait.
        if self.conn.flush().await.is_err() {
            return Err(Reply::err_then(Flow::Close(Outcome::Error)));
        }
        let wait = self.shared.limits.settle(attempt).await;
        if !wait.is_zero() {
            self.shared.observer.login_penalty(wait);
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// An unknown domain or an invalid name looks like a wrong password,
    /// also by its time: a stand-in directory (the listener's default
    /// tenant's, else the first tenant's by name) spends what its own
    /// failed logins cost, through the same hashing slots.
    async fn spend_a_failures_time(&mut self, proof: &Proof<'_>) {
        let Proof::Password(password) = proof else {
            return;
        };
        let stand_in = self
            .listener
            .default_tenant
            .as_deref()
            .and_then(|name| self.shared.tenants.get(name))
            .or_else(|| self.shared.tenants.iter().min_by_key(|t| &t.name));
        if let Some(stand_in) = stand_in {
            let _ = stand_in.directory.verify_unknown(password).await;
        }
    }

    /// Opens the mailbox of verified credentials: LOGIN-DELAY, the tenant's
    /// session cap, the lock, the snapshot; then the session is in
    /// TRANSACTION.
    async fn open_mailbox(&mut self, mechanism: &'static str, verified: Verified) -> Reply {
        let Verified {
            tenant,
            mailbox,
            user,
        } = verified;
        // The store's name for the mailbox, not the login: two logins that
        // map to one maildrop must not hold two sessions on it.
        let lock_key = tenant.store.mailbox_key(&mailbox);
        let login_delay = user.login_delay.or(tenant.login_delay);
        if !tenant.login_allowed(&lock_key, login_delay) {
            return self.refuse_login(
                &tenant.name,
                mechanism,
                LoginResult::Denied,
                Code::LoginDelay,
                "Logged in too recently, try again later.",
            );
        }
        let Some(tenant_session) = tenant.enter() else {
            return self.refuse_login(
                &tenant.name,
                mechanism,
                LoginResult::Denied,
                Code::SysTemp,
                "Too many sessions for this domain, try again later.",
            );
        };
        let lock = match self.shared.locks.acquire(&lock_key).await {
            Ok(lock) => {
                self.shared
                    .observer
                    .lock(&tenant.name, LockResult::Ok.as_str());
                lock
            }
            Err(LockError::InUse) => {
                self.shared
                    .observer
                    .lock(&tenant.name, LockResult::InUse.as_str());
                return self.refuse_login(
                    &tenant.name,
                    mechanism,
                    LoginResult::InUse,
                    Code::InUse,
                    "Mailbox is locked by another POP3 session.",
                );
            }
            Err(e @ LockError::Unavailable(_)) => {
                tracing::warn!(error = %e, "lock failure");
                self.shared
                    .observer
                    .lock(&tenant.name, LockResult::Error.as_str());
                return self.refuse_login(
                    &tenant.name,
                    mechanism,
                    LoginResult::TempError,
                    Code::SysTemp,
                    "Mailbox locking unavailable, try again later.",
                );
            }
        };
        let started = Instant::now();
        // Open, then claim the maildrop with the lock's fence, so that a
        // store that records fences refuses an older holder from now on.
        let opened = match tenant.store.open(&mailbox).await {
            Ok(mut d) => d.claim(lock.fence()).await.map(|()| d),
            Err(e) => Err(e),
        };
        let backend = tenant.store.backend();
        super::observe_store(
            &*self.shared.observer,
            &tenant.name,
            backend,
            "open",
            started.elapsed(),
            opened.as_ref().err().map(StoreError::kind),
        );
        let maildrop = match opened {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "maildrop open failed");
                lock.release().await;
                let (code, result) = if matches!(e, StoreError::Fenced(_)) {
                    // A newer session has claimed the mailbox: this lock is stale.
                    (Code::InUse, LoginResult::InUse)
                } else if e.is_temporary() {
                    (Code::SysTemp, LoginResult::TempError)
                } else {
                    (Code::SysPerm, LoginResult::PermError)
                };
                return self.refuse_login(
                    &tenant.name,
                    mechanism,
                    result,
                    code,
                    "Cannot open the mailbox, try again later.",
                );
            }
        };
        tenant.record_login(&lock_key, login_delay);
        self.shared
            .observer
            .login(Some(&tenant.name), mechanism, LoginResult::Ok.as_str());
        let mb = Mailbox::new(tenant, tenant_session, mailbox, lock, maildrop, login_delay);
        let (count, octets) = mb.stat();
        self.logged_in = true;
        self.registration = Some(self.shared.sessions.register(
            self.id,
            &mb.tenant.name,
            self.user.as_deref().unwrap_or_default(),
            self.client,
            self.conn.sent_counter(),
        ));
        // Tenant, user and client are the span's.
        tracing::info!(
            mechanism,
            tls = self.tls_active,
            messages = count,
            octets,
            "login"
        );
        response::ok(
            &mut self.conn.out,
            &format!("Logged in, {count} messages ({octets} octets)."),
        );
        self.state = State::Transaction(Box::new(mb));
        Reply::ok()
    }

    /// Answers a login whose credentials were good but that cannot open the
    /// mailbox now, and counts it under `result`.
    fn refuse_login(
        &mut self,
        tenant: &str,
        mechanism: &'static str,
        result: LoginResult,
        code: Code,
        text: &str,
    ) -> Reply {
        let result = result.as_str();
        self.shared.observer.login(Some(tenant), mechanism, result);
        // The span has the tenant and the user: their credentials were good.
        tracing::info!(mechanism, tls = self.tls_active, result, "login refused");
        response::err(&mut self.conn.out, Some(code), text);
        Reply::err()
    }

    /// Answers a failed login. The log says "auth failed" whatever the
    /// cause (unknown user or domain, wrong password, disabled user), as
    /// the client hears it, and names the attempted account, escaped and
    /// cut to a bounded length; never the password.
    async fn fail_login(
        &mut self,
        mechanism: &'static str,
        tenant: Option<&str>,
        account: &str,
    ) -> Reply {
        self.shared
            .observer
            .login(tenant, mechanism, LoginResult::Failed.as_str());
        let logged = crate::logsafe::account(account);
        tracing::info!(
            user = logged.as_str(),
            tenant = tenant.unwrap_or("-"),
            mechanism,
            tls = self.tls_active,
            failures = self.auth_failures + 1,
            "auth failed"
        );
        self.auth_failures += 1;
        // Flush what the client pipelined before, then make it wait.
        if self.conn.flush().await.is_err() {
            return Reply::err_then(Flow::Close(Outcome::Error));
        }
        tokio::time::sleep(self.shared.config.auth_failure_delay).await;
        response::err(&mut self.conn.out, Some(Code::Auth), FAILED);
        if self.auth_failures >= self.shared.config.max_auth_failures {
            response::err(
                &mut self.conn.out,
                None,
                "Too many authentication failures, closing.",
            );
            return Reply::err_then(Flow::Close(Outcome::Abuse));
        }
        Reply::err()
    }
}
