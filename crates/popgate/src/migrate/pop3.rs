//! A live POP3 server as a migration source (`--from pop3://host:port`),
//! for a server whose storage cannot be read: each mailbox is one POP3
//! session (USER/PASS with the user's password, or Dovecot's master-user
//! login `user*master`), its messages and UIDLs are what LIST and UIDL
//! say, a message is RETR streamed (dot-unstuffed, never whole in memory),
//! and `--delete-source` is DELE and QUIT. The server's own maildrop lock
//! keeps its users out meanwhile (a login refused `[IN-USE]` is retried).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use popgate_store::{
    ExpungeReport, MailStore, MailboxId, Maildrop, MessageInfo, MessageStream, StoreError,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

use super::copy::IN_USE;
use crate::wiring::Error;

/// Every read and write of a session has this long.
const TIMEOUT: Duration = Duration::from_secs(60);
/// A line longer than this is passed on in pieces (a message line) or
/// refused (a status line).
const LINE_CAP: u64 = 64 * 1024;

pub struct Pop3Source {
    addr: String,
    passwords: BTreeMap<String, String>,
    master: Option<(String, String)>,
}

fn read_secret_file(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::Runtime(format!("{}: {e}", path.display())))
}

impl Pop3Source {
    pub fn new(
        url: &str,
        passwords: Option<&Path>,
        master_user: Option<&str>,
        master_password_file: Option<&Path>,
    ) -> Result<Self, Error> {
        let addr = url
            .strip_prefix("pop3://")
            .unwrap_or(url)
            .trim_end_matches('/');
        if addr.is_empty() || !addr.contains(':') {
            return Err(Error::Runtime(format!(
                "--from {url}: want pop3://HOST:PORT"
            )));
        }
        let mut map = BTreeMap::new();
        if let Some(path) = passwords {
            for (n, line) in read_secret_file(path)?.lines().enumerate() {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((login, password)) = line.split_once(':') else {
                    return Err(Error::Runtime(format!(
                        "{}:{}: want login:password",
                        path.display(),
                        n + 1
                    )));
                };
                map.insert(login.trim().to_ascii_lowercase(), password.to_owned());
            }
        }
        let master = match (master_user, master_password_file) {
            (Some(user), Some(file)) => {
                let secret = read_secret_file(file)?;
                Some((
                    user.to_owned(),
                    secret.trim_end_matches(['\r', '\n']).to_owned(),
                ))
            }
            _ => None,
        };
        if map.is_empty() && master.is_none() {
            return Err(Error::Runtime(
                "a pop3:// source needs --passwords FILE or --master-user with --master-password-file"
                    .into(),
            ));
        }
        Ok(Pop3Source {
            addr: addr.to_owned(),
            passwords: map,
            master,
        })
    }

    /// The logins of the passwords file, sorted.
    pub fn logins(&self) -> Vec<String> {
        self.passwords.keys().cloned().collect()
    }

    fn credentials(&self, login: &str) -> Result<(String, String), StoreError> {
        if let Some(p) = self.passwords.get(login) {
            return Ok((login.to_owned(), p.clone()));
        }
        match &self.master {
            Some((master, secret)) => Ok((format!("{login}*{master}"), secret.clone())),
            None => Err(StoreError::Permanent(format!(
                "no password for {login} in --passwords"
            ))),
        }
    }
}

struct Conn {
    io: BufReader<TcpStream>,
    /// A RETR was not read to its end: the session is out of step.
    broken: bool,
}

fn temp(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Temporary(format!("POP3 source: {what}: {e}"))
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(temp(what, e)),
        Err(_) => Err(temp(what, "timed out")),
    }
}

impl Conn {
    /// One line, CRLF included; empty at the end of the stream. A line
    /// longer than [`LINE_CAP`] comes back in pieces.
    async fn line(&mut self) -> Result<Vec<u8>, StoreError> {
        let mut line = Vec::new();
        timed(
            "reading",
            (&mut self.io).take(LINE_CAP).read_until(b'\n', &mut line),
        )
        .await?;
        Ok(line)
    }

    async fn command(&mut self, cmd: &str, shown: &str) -> Result<String, StoreError> {
        if self.broken {
            return Err(temp(
                shown,
                "the session is out of step after an aborted RETR",
            ));
        }
        let mut bytes = cmd.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        timed(shown, self.io.get_mut().write_all(&bytes)).await?;
        self.status(shown).await
    }

    /// A status line: `Ok(text after +OK)`, or the `-ERR` as an error.
    async fn status(&mut self, shown: &str) -> Result<String, StoreError> {
        let line = self.line().await?;
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        if let Some(rest) = text.strip_prefix("+OK") {
            return Ok(rest.trim().to_owned());
        }
        if text.is_empty() {
            return Err(temp(shown, "the server closed the connection"));
        }
        if text.contains(IN_USE) {
            return Err(StoreError::Temporary(format!("{IN_USE} {shown}: {text}")));
        }
        Err(StoreError::Permanent(format!(
            "POP3 source: {shown}: {text}"
        )))
    }

    /// The lines of a multi-line answer, without the terminating dot.
    async fn listing(&mut self, cmd: &str) -> Result<Vec<String>, StoreError> {
        self.command(cmd, cmd).await?;
        let mut out = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Err(temp(cmd, "the server closed the connection"));
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if text == "." {
                return Ok(out);
            }
            out.push(text);
        }
    }
}

fn numbered(lines: &[String], what: &str) -> Result<HashMap<usize, String>, StoreError> {
    let mut out = HashMap::with_capacity(lines.len());
    for l in lines {
        let mut parts = l.split_whitespace();
        let (Some(n), Some(v)) = (parts.next().and_then(|n| n.parse().ok()), parts.next()) else {
            return Err(StoreError::Permanent(format!(
                "POP3 source: bad {what} line {l:?}"
            )));
        };
        out.insert(n, v.to_owned());
    }
    Ok(out)
}

#[async_trait]
impl MailStore for Pop3Source {
    fn backend(&self) -> &'static str {
        "pop3"
    }

    fn mailbox_key(&self, mailbox: &MailboxId) -> String {
        format!("pop3:{}/{}", self.addr, mailbox.login())
    }

    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        let login = mailbox.login();
        let (user, password) = self.credentials(&login)?;
        let tcp = timed("connecting", TcpStream::connect(&self.addr)).await?;
        let mut conn = Conn {
            io: BufReader::new(tcp),
            broken: false,
        };
        conn.status("greeting").await?;
        conn.command(&format!("USER {user}"), "USER").await?;
        conn.command(&format!("PASS {password}"), &format!("login of {login}"))
            .await?;
        let uidls = numbered(&conn.listing("UIDL").await?, "UIDL")?;
        let sizes = numbered(&conn.listing("LIST").await?, "LIST")?;
        let mut messages = Vec::with_capacity(sizes.len());
        let mut numbers = Vec::with_capacity(sizes.len());
        let mut order: Vec<usize> = sizes.keys().copied().collect();
        order.sort_unstable();
        for n in order {
            let size = sizes[&n].parse::<u64>().map_err(|_| {
                StoreError::Permanent(format!("POP3 source: bad LIST size for message {n}"))
            })?;
            let uidl = uidls.get(&n).cloned().ok_or_else(|| {
                StoreError::Permanent(format!("POP3 source: no UIDL for message {n}"))
            })?;
            messages.push(MessageInfo { uidl, size });
            numbers.push(n);
        }
        Ok(Box::new(Pop3Drop {
            conn: Arc::new(Mutex::new(conn)),
            messages,
            numbers,
        }))
    }

    async fn append(&self, _: &MailboxId, _: MessageStream) -> Result<String, StoreError> {
        Err(StoreError::Permanent("a POP3 source takes no mail".into()))
    }
}

pub struct Pop3Drop {
    conn: Arc<Mutex<Conn>>,
    messages: Vec<MessageInfo>,
    /// The message number of each entry.
    numbers: Vec<usize>,
}

#[async_trait]
impl Maildrop for Pop3Drop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError> {
        let n = *popgate_store::message_at(&self.numbers, index)?;
        let listed = self.messages[index].size;
        let mut conn = self.conn.clone().lock_owned().await;
        conn.command(&format!("RETR {n}"), &format!("RETR {n}"))
            .await?;
        // The session stays busy until the body is read: a task reads it,
        // unstuffed, into a channel of a few chunks that the stream drains.
        let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        conn.broken = true;
        tokio::spawn(async move {
            let mut at_line_start = true;
            // A line's CRLF is held back until more follows: RETR ends an
            // unterminated last line with a CRLF that LIST does not count,
            // and that the message never had.
            let mut held = false;
            let mut sent: u64 = 0;
            loop {
                let line = match conn.line().await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                };
                if line.is_empty() {
                    let _ = tx
                        .send(Err(std::io::Error::other(
                            "the server closed the connection in RETR",
                        )))
                        .await;
                    return;
                }
                let ends = line.ends_with(b"\n");
                let mut data = &line[..];
                if at_line_start {
                    if data == b".\r\n" || data == b".\n" {
                        conn.broken = false;
                        if held && sent + 2 <= listed {
                            let _ = tx.send(Ok(b"\r\n".to_vec())).await;
                        }
                        return;
                    }
                    if data.first() == Some(&b'.') {
                        data = &data[1..];
                    }
                }
                at_line_start = ends;
                let mut chunk = Vec::with_capacity(data.len() + 2);
                if held {
                    chunk.extend_from_slice(b"\r\n");
                }
                held = data.ends_with(b"\r\n");
                if held {
                    data = &data[..data.len() - 2];
                }
                chunk.extend_from_slice(data);
                sent += chunk.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return; // dropped early: the session stays marked broken
                }
            }
        });
        Ok(Box::pin(ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }))
    }

    async fn expunge(
        &mut self,
        indexes: &[usize],
        _fence: u64,
    ) -> Result<ExpungeReport, StoreError> {
        let indexes = popgate_store::expunge_targets(indexes, self.numbers.len())?;
        let mut conn = self.conn.lock().await;
        for &i in &indexes {
            let n = self.numbers[i];
            conn.command(&format!("DELE {n}"), &format!("DELE {n}"))
                .await?;
        }
        // Only a QUIT that completes deletes anything.
        conn.command("QUIT", "QUIT (which commits the deletions)")
            .await?;
        Ok(ExpungeReport {
            deleted: indexes.len(),
            already_gone: 0,
        })
    }
}

struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if self.at < self.chunk.len() {
                let n = buf.remaining().min(self.chunk.len() - self.at);
                let at = self.at;
                buf.put_slice(&self.chunk[at..at + n]);
                self.at += n;
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
