//! One POP3 client connection and the sessions the load generator runs on it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::stats::Sample;

/// What went wrong, by class (the report counts errors per class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The TCP connection could not be made.
    Connect,
    /// The server sent nothing for `--timeout`, or the session outlived `--session-timeout`.
    Timeout,
    /// The connection broke (reset, early EOF).
    Io,
    /// The greeting was not `+OK`.
    Greeting,
    /// USER or PASS was refused.
    Login,
    /// STAT, UIDL, LIST, RETR or QUIT was refused.
    Command,
    /// A response that breaks RFC 1939 (bad status line, bare LF, ...).
    Protocol,
    /// The data is inconsistent: sizes or counts that do not add up.
    Verify,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Greeting => "greeting",
            ErrorKind::Login => "login",
            ErrorKind::Command => "command",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Verify => "verify",
        }
    }
}

#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Error {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            detail: detail.into(),
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

/// What a session does after logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Login, STAT, QUIT.
    Login,
    /// Login, STAT, UIDL, LIST, RETR every message (or `--retr N`), QUIT.
    Full,
    /// Login and STAT, then hold the session open for `--hold`, then QUIT.
    Idle,
}

/// Per-session settings.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub mode: Mode,
    pub pipeline: bool,
    /// RETR at most this many messages per session (Full mode).
    pub retr_limit: u32,
    /// Check every Nth retrieved message's size against LIST (0: none).
    pub verify_every: u64,
    /// No single read or write may wait longer than this.
    pub io_timeout: Duration,
}

pub struct Client {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
    io_timeout: Duration,
}

fn io_error(e: std::io::Error, doing: &str) -> Error {
    Error::new(ErrorKind::Io, format!("{doing}: {e}"))
}

fn show(line: &[u8]) -> String {
    let end = line.len().min(120);
    String::from_utf8_lossy(&line[..end]).trim_end().to_string()
}

impl Client {
    pub async fn connect(addr: SocketAddr, io_timeout: Duration) -> Result<Client> {
        let stream = tokio::time::timeout(io_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, "connect timed out"))?
            .map_err(|e| Error::new(ErrorKind::Connect, e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            stream: BufReader::with_capacity(64 * 1024, stream),
            line: Vec::with_capacity(256),
            io_timeout,
        })
    }

    async fn send(&mut self, data: &[u8]) -> Result<()> {
        tokio::time::timeout(self.io_timeout, self.stream.get_mut().write_all(data))
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, "write timed out"))?
            .map_err(|e| io_error(e, "write"))
    }

    /// Reads one line (with its line ending) into `self.line`.
    async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        let n = tokio::time::timeout(
            self.io_timeout,
            self.stream.read_until(b'\n', &mut self.line),
        )
        .await
        .map_err(|_| Error::new(ErrorKind::Timeout, "read timed out"))?
        .map_err(|e| io_error(e, "read"))?;
        if n == 0 || self.line.last() != Some(&b'\n') {
            return Err(Error::new(ErrorKind::Io, "connection closed by the server"));
        }
        Ok(())
    }

    /// Reads a status line; `+OK` gives the text after it, `-ERR` an error of `kind`.
    async fn status(&mut self, kind: ErrorKind, what: &str) -> Result<String> {
        self.read_line().await?;
        let line = &self.line;
        if !line.ends_with(b"\r\n") {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("{what}: status line without CRLF: {}", show(line)),
            ));
        }
        if line.starts_with(b"+OK") {
            let rest = &line[3..line.len() - 2];
            Ok(String::from_utf8_lossy(rest).trim_start().to_string())
        } else if line.starts_with(b"-ERR") {
            Err(Error::new(kind, format!("{what}: {}", show(line))))
        } else {
            Err(Error::new(
                ErrorKind::Protocol,
                format!("{what}: not +OK/-ERR: {}", show(line)),
            ))
        }
    }

    /// Reads the lines of a multi-line response up to its terminator, calling
    /// `each` with every line (dot-unstuffed, CRLF removed).
    async fn multiline(
        &mut self,
        what: &str,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        loop {
            self.read_line().await?;
            let line = &self.line;
            if !line.ends_with(b"\r\n") {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{what}: line without CRLF: {}", show(line)),
                ));
            }
            let body = &line[..line.len() - 2];
            if body == b"." {
                return Ok(());
            }
            each(body.strip_prefix(b".").unwrap_or(body))?;
        }
    }

    /// Reads a RETR body up to the terminating `.\r\n`. Returns (octets
    /// after dot-unstuffing, i.e. what LIST promised; octets on the wire).
    async fn message_body(&mut self) -> Result<(u64, u64)> {
        let mut unstuffed = 0u64;
        let mut wire = 0u64;
        loop {
            self.read_line().await?;
            let line = &self.line;
            wire += line.len() as u64;
            if !line.ends_with(b"\r\n") {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("RETR: line ending in a bare LF: {}", show(line)),
                ));
            }
            if line.as_slice() == b".\r\n" {
                return Ok((unstuffed, wire));
            }
            if line[0] == b'.' {
                if line.get(1) != Some(&b'.') {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("RETR: line starts with an unstuffed dot: {}", show(line)),
                    ));
                }
                unstuffed += line.len() as u64 - 1;
            } else {
                unstuffed += line.len() as u64;
            }
        }
    }
}

/// Logs in as `user` and returns the client positioned in TRANSACTION, and
/// the time from connect to the PASS reply.
pub async fn login(
    addr: SocketAddr,
    user: &str,
    password: &str,
    spec: &SessionSpec,
) -> Result<(Client, Duration)> {
    let started = Instant::now();
    let mut c = Client::connect(addr, spec.io_timeout).await?;
    c.status(ErrorKind::Greeting, "greeting").await?;
    if spec.pipeline {
        c.send(format!("USER {user}\r\nPASS {password}\r\n").as_bytes())
            .await?;
        let user_reply = c.status(ErrorKind::Login, "USER").await;
        let pass_reply = c.status(ErrorKind::Login, "PASS").await;
        user_reply?;
        pass_reply?;
    } else {
        c.send(format!("USER {user}\r\n").as_bytes()).await?;
        c.status(ErrorKind::Login, "USER").await?;
        c.send(format!("PASS {password}\r\n").as_bytes()).await?;
        c.status(ErrorKind::Login, "PASS").await?;
    }
    Ok((c, started.elapsed()))
}

/// STAT: (messages, octets).
pub async fn stat(c: &mut Client) -> Result<(u32, u64)> {
    c.send(b"STAT\r\n").await?;
    let text = c.status(ErrorKind::Command, "STAT").await?;
    let mut it = text.split_ascii_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(n)), Some(Ok(octets))) if n <= u32::MAX as u64 => Ok((n as u32, octets)),
        _ => Err(Error::new(
            ErrorKind::Protocol,
            format!("STAT: cannot parse {text:?}"),
        )),
    }
}

pub async fn quit(c: &mut Client) -> Result<()> {
    c.send(b"QUIT\r\n").await?;
    c.status(ErrorKind::Command, "QUIT").await?;
    Ok(())
}

fn parse_listing(line: &[u8], what: &str) -> Result<(u32, String)> {
    let text = std::str::from_utf8(line)
        .map_err(|_| Error::new(ErrorKind::Protocol, format!("{what}: not UTF-8")))?;
    let mut it = text.splitn(2, ' ');
    let num = it.next().and_then(|n| n.parse::<u32>().ok());
    match (num, it.next()) {
        (Some(n), Some(rest)) if !rest.is_empty() => Ok((n, rest.to_string())),
        _ => Err(Error::new(
            ErrorKind::Protocol,
            format!("{what}: bad line {text:?}"),
        )),
    }
}

/// One whole session of `spec.mode` (Login or Full) for `user`; records
/// latencies and volumes into `sample`.
pub async fn session(
    addr: SocketAddr,
    user: &str,
    password: &str,
    spec: &SessionSpec,
    sample: &mut Sample,
) -> Result<()> {
    let (mut c, login_time) = login(addr, user, password, spec).await?;
    sample.login_us.push(micros(login_time));
    let (count, octets) = stat(&mut c).await?;
    if spec.mode == Mode::Full {
        c.send(b"UIDL\r\n").await?;
        c.status(ErrorKind::Command, "UIDL").await?;
        let mut uidls = 0u32;
        c.multiline("UIDL", |line| {
            let (n, uidl) = parse_listing(line, "UIDL")?;
            uidls += 1;
            if n != uidls || uidl.len() > 70 || !uidl.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(Error::new(
                    ErrorKind::Verify,
                    format!("UIDL line {uidls}: {n} {uidl:?}"),
                ));
            }
            Ok(())
        })
        .await?;
        c.send(b"LIST\r\n").await?;
        c.status(ErrorKind::Command, "LIST").await?;
        let mut sizes = Vec::with_capacity(count as usize);
        c.multiline("LIST", |line| {
            let (n, size) = parse_listing(line, "LIST")?;
            let size = size
                .parse::<u64>()
                .map_err(|_| Error::new(ErrorKind::Protocol, format!("LIST: bad size {size:?}")))?;
            if n as usize != sizes.len() + 1 {
                return Err(Error::new(
                    ErrorKind::Verify,
                    format!("LIST: message {n} out of order"),
                ));
            }
            sizes.push(size);
            Ok(())
        })
        .await?;
        let listed: u64 = sizes.iter().sum();
        if uidls != count || sizes.len() != count as usize || listed != octets {
            return Err(Error::new(
                ErrorKind::Verify,
                format!(
                    "STAT says {count} messages / {octets} octets, UIDL lists {uidls}, LIST {} / {listed}",
                    sizes.len()
                ),
            ));
        }
        for n in 1..=count.min(spec.retr_limit) {
            let started = Instant::now();
            c.send(format!("RETR {n}\r\n").as_bytes()).await?;
            c.status(ErrorKind::Command, "RETR").await?;
            let (unstuffed, wire) = c.message_body().await?;
            sample.retr_us.push(micros(started.elapsed()));
            sample.messages += 1;
            sample.message_octets += unstuffed;
            sample.wire_octets += wire;
            let expected = sizes[n as usize - 1];
            if spec.verify_every > 0 && sample.messages.is_multiple_of(spec.verify_every) {
                sample.verified += 1;
                if unstuffed != expected {
                    return Err(Error::new(
                        ErrorKind::Verify,
                        format!(
                            "RETR {n}: {unstuffed} octets after unstuffing, LIST said {expected}"
                        ),
                    ));
                }
            }
        }
    }
    quit(&mut c).await?;
    Ok(())
}

pub fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}
