//! popgate's real server on a loopback port over one store, and a client
//! that plays a case against it and the model side by side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use popgate_auth::{MemoryDirectory, MemoryUser};
use popgate_server::limits::{LimitsConfig, MemoryLimits};
use popgate_server::observer::NoObserver;
use popgate_server::{Listener, ListenerConfig, Server, SessionConfig, Shared, TlsMode};
use popgate_server::{Tenant, Tenants};
use popgate_store::{MailStore, MailboxId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::model::{Cmd, Expect, Model, Msg, Response, check};
use crate::strategy::{Case, audit};

const DOMAIN: &str = "acme.example";
const WAIT: Duration = Duration::from_secs(20);

pub struct Harness {
    addr: SocketAddr,
    store: Arc<dyn MailStore>,
    directory: Arc<MemoryDirectory>,
    next: AtomicU32,
}

impl Harness {
    /// Serves tenant `acme` from `store` on 127.0.0.1, with the login
    /// bounds out of the way (a case may fail many logins on purpose).
    pub async fn start(store: Arc<dyn MailStore>) -> Harness {
        let directory = Arc::new(MemoryDirectory::new());
        let tenant = Tenant::new(
            "acme",
            vec![DOMAIN.into()],
            directory.clone(),
            store.clone(),
        );
        let limits = MemoryLimits::new(LimitsConfig {
            penalty_base: Duration::ZERO,
            penalty_max: Duration::ZERO,
            max_login_commands: u32::MAX,
            ..LimitsConfig::default()
        });
        let shared = Shared {
            config: SessionConfig {
                max_auth_failures: u32::MAX,
                max_bad_commands: u32::MAX,
                auth_failure_delay: Duration::ZERO,
                ..SessionConfig::default()
            },
            tenants: Tenants::new(vec![tenant]).expect("one tenant"),
            locks: Arc::new(popgate_lock::MemoryLocks::new()),
            observer: Arc::new(NoObserver),
            limits: Arc::new(limits),
            tls: None,
            sessions: popgate_server::SessionRegistry::new(),
        };
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = Listener {
            tcp,
            config: ListenerConfig {
                tls: TlsMode::None,
                plaintext_auth: true,
                default_tenant: Some("acme".into()),
                proxy_protocol: false,
                trusted_proxies: vec![],
            },
        };
        let server = Server::new(shared);
        tokio::spawn(server.run(vec![listener], std::future::pending(), Duration::ZERO));
        Harness {
            addr,
            store,
            directory,
            next: AtomicU32::new(0),
        }
    }

    /// Plays `case` on a mailbox of its own, then the audit session.
    /// The error is the transcript up to the first difference.
    pub async fn run(&self, case: &Case) -> Result<(), String> {
        let local = format!("m{}", self.next.fetch_add(1, Ordering::Relaxed));
        let login = format!("{local}@{DOMAIN}");
        self.directory.insert(
            &login,
            MemoryUser::new(format!("{{PLAIN}}{}", crate::model::PASSWORD)),
        );
        let mailbox = MailboxId::new("acme", &local, DOMAIN);
        let mut delivered = Vec::new();
        for mail in &case.mails {
            let stream = Box::pin(std::io::Cursor::new(mail.0.clone()));
            let uidl = self
                .store
                .append(&mailbox, stream)
                .await
                .map_err(|e| format!("delivery failed: {e}"))?;
            delivered.push(Msg {
                stored: mail.0.clone(),
                uidl,
            });
        }
        let mut model = Model::new(delivered);
        let mut log = Transcript::default();
        for (i, session) in case.sessions.iter().enumerate() {
            log.note(format!("-- session {}", i + 1));
            self.session(&login, session, &mut model, &mut log).await?;
        }
        log.note("-- audit".into());
        let audit = audit(model.committed.len());
        self.session(&login, &audit, &mut model, &mut log).await
    }

    async fn session(
        &self,
        login: &str,
        cmds: &[Cmd],
        model: &mut Model,
        log: &mut Transcript,
    ) -> Result<(), String> {
        let mut c = Client::connect(self.addr).await.map_err(|e| log.fail(e))?;
        let greeting = c.response(&Cmd::Noop).await.map_err(|e| log.fail(e))?;
        if !greeting.status.starts_with("+OK") {
            return Err(log.fail(format!("greeting {greeting:?}")));
        }
        model.connect();
        for cmd in cmds {
            let line = cmd.line(login);
            log.note(format!("C: {line}"));
            if *cmd == Cmd::Drop {
                model.step(cmd);
                return Ok(());
            }
            let mut got = c.send(cmd, &line).await.map_err(|e| log.fail(e))?;
            let expect = model.step(cmd);
            // The session before may still hold the lock for a moment after
            // its QUIT was answered or its client hung up: log in again.
            let mut tries = 0;
            while *cmd == Cmd::Pass(true)
                && expect == Expect::Ok(None)
                && got.status.starts_with("-ERR [IN-USE]")
                && tries < 200
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                c.send(&Cmd::User(true), &Cmd::User(true).line(login))
                    .await
                    .map_err(|e| log.fail(e))?;
                got = c.send(cmd, &line).await.map_err(|e| log.fail(e))?;
            }
            log.note(got.summary());
            check(&expect, &got).map_err(|e| log.fail(e))?;
            if model.closed() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The case so far, for the failure message.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn note(&mut self, line: String) {
        self.0.push(line);
    }

    fn fail(&self, why: String) -> String {
        format!("{}\n!! {why}", self.0.join("\n"))
    }
}

impl Response {
    fn summary(&self) -> String {
        let mut s = format!("S: {}", self.status);
        if let Some(body) = &self.body {
            let shown: String = body.escape_ascii().to_string().chars().take(120).collect();
            s.push_str(&format!(" + {} octets: \"{shown}\"", body.len()));
        }
        if self.closed {
            s.push_str(" <closed>");
        }
        s
    }
}

/// A POP3 client over TCP that keeps what the server sent, byte for byte.
struct Client {
    io: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Result<Client, String> {
        let io = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        Ok(Client {
            io,
            buf: Vec::new(),
            eof: false,
        })
    }

    async fn send(&mut self, cmd: &Cmd, line: &str) -> Result<Response, String> {
        self.io
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        self.response(cmd).await
    }

    /// The answer to `cmd`: the status line, the body of a multi-line
    /// `+OK` un-stuffed, and, after QUIT's `+OK`, whether the server closed.
    async fn response(&mut self, cmd: &Cmd) -> Result<Response, String> {
        let mut r = Response::default();
        let Some(status) = self.line().await? else {
            r.closed = true;
            return Ok(r);
        };
        r.status = String::from_utf8_lossy(&status).into_owned();
        let ok = r.status.starts_with("+OK");
        if ok && cmd.multiline() {
            let mut body = Vec::new();
            loop {
                let Some(line) = self.line().await? else {
                    return Err(format!("the body ended without its dot: {body:?}"));
                };
                if line == b"." {
                    break;
                }
                body.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
                body.extend_from_slice(b"\r\n");
            }
            r.body = Some(body);
        }
        if *cmd == Cmd::Quit {
            // Nothing may follow QUIT's answer but the end of the stream.
            match self.line().await? {
                None => r.closed = true,
                Some(more) => return Err(format!("after QUIT: {:?}", more.escape_ascii())),
            }
        }
        Ok(r)
    }

    /// One line without its CRLF, `None` at the end of the stream. A line
    /// that ends in a bare LF is an error: POP3 ends every line with CRLF.
    async fn line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                if i == 0 || self.buf[i - 1] != b'\r' {
                    let start = i.saturating_sub(40);
                    return Err(format!(
                        "a bare LF from the server: {:?}",
                        self.buf[start..=i].escape_ascii().to_string()
                    ));
                }
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(line[..i - 1].to_vec()));
            }
            if self.eof {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(format!(
                        "a partial line: {:?}",
                        self.buf.escape_ascii().to_string()
                    ))
                };
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(WAIT, self.io.read(&mut chunk))
                .await
                .map_err(|_| format!("no answer in {WAIT:?}"))?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                self.eof = true;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
