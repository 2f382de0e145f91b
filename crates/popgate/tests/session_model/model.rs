//! RFC 1939 as a model: what a maildrop looks like to POP3, what each
//! command must answer in each state, and a checker that compares a
//! server's response with that. Written from the RFC, not from popgate's
//! code: sizes, line endings, dot-stuffing and TOP are computed here on
//! their own.

use std::fmt;

/// A message number as the client types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Num {
    /// 1-based; may be past the end or deleted.
    N(u32),
    /// Not a message number at all: `0`, `-1`, `abc`, one past u32.
    Bad(&'static str),
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::N(n) => write!(f, "{n}"),
            Num::Bad(s) => f.write_str(s),
        }
    }
}

/// One step of a client: a command line, or hanging up.
#[derive(Clone, PartialEq, Eq)]
pub enum Cmd {
    /// `USER` with the mailbox's own login (true) or someone unknown.
    User(bool),
    /// `PASS` with the right password (true) or a wrong one.
    Pass(bool),
    Stat,
    List(Option<Num>),
    Uidl(Option<Num>),
    Retr(Num),
    Top(Num, u32),
    Dele(Num),
    Rset,
    Noop,
    Quit,
    /// A line that is no command.
    Junk,
    /// The client closes the connection without QUIT.
    Drop,
}

pub const PASSWORD: &str = "secret";

impl Cmd {
    /// The command line, without CRLF, for the mailbox `login`.
    pub fn line(&self, login: &str) -> String {
        let arg = |n: &Option<Num>| n.map(|n| format!(" {n}")).unwrap_or_default();
        match self {
            Cmd::User(true) => format!("USER {login}"),
            Cmd::User(false) => "USER nobody@acme.example".into(),
            Cmd::Pass(true) => format!("PASS {PASSWORD}"),
            Cmd::Pass(false) => "PASS wrong".into(),
            Cmd::Stat => "STAT".into(),
            Cmd::List(n) => format!("LIST{}", arg(n)),
            Cmd::Uidl(n) => format!("UIDL{}", arg(n)),
            Cmd::Retr(n) => format!("RETR {n}"),
            Cmd::Top(n, k) => format!("TOP {n} {k}"),
            Cmd::Dele(n) => format!("DELE {n}"),
            Cmd::Rset => "RSET".into(),
            Cmd::Noop => "NOOP".into(),
            Cmd::Quit => "QUIT".into(),
            Cmd::Junk => "XYZZY 1".into(),
            Cmd::Drop => "<drop>".into(),
        }
    }

    /// Whether a `+OK` to this command starts a multi-line response.
    pub fn multiline(&self) -> bool {
        matches!(
            self,
            Cmd::List(None) | Cmd::Uidl(None) | Cmd::Retr(_) | Cmd::Top(..)
        )
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line("<login>"))
    }
}

/// A stored message: its bytes as delivered, and the UIDL the store gave.
#[derive(Clone, Debug)]
pub struct Msg {
    pub stored: Vec<u8>,
    pub uidl: String,
}

impl Msg {
    /// RFC 1939 sends every line ending as CRLF: a bare LF gets its CR, a
    /// CR that no LF follows is content.
    pub fn crlf(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.stored.len() + 16);
        for (i, &b) in self.stored.iter().enumerate() {
            if b == b'\n' && (i == 0 || self.stored[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    /// The size LIST and STAT give: the octets of the message as sent.
    pub fn size(&self) -> u64 {
        self.crlf().len() as u64
    }

    /// What RETR carries once un-dot-stuffed: the CRLF form, its last line
    /// ended (a lone CR at the end gets its LF, anything else a CRLF).
    pub fn retr(&self) -> Vec<u8> {
        let mut m = self.crlf();
        if !m.is_empty() && !m.ends_with(b"\n") {
            if m.ends_with(b"\r") {
                m.push(b'\n');
            } else {
                m.extend_from_slice(b"\r\n");
            }
        }
        m
    }

    /// TOP n k: the header, the blank line, then `k` lines of the body.
    pub fn top(&self, k: u32) -> Vec<u8> {
        let retr = self.retr();
        let mut out = Vec::new();
        let mut in_header = true;
        let mut left = k;
        for line in retr.split_inclusive(|&b| b == b'\n') {
            if !in_header {
                if left == 0 {
                    break;
                }
                left -= 1;
            } else if line == b"\r\n" {
                in_header = false;
            }
            out.extend_from_slice(line);
        }
        out
    }
}

/// What the model says a command must get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `+OK`; when `Some`, exactly this text after `+OK `.
    Ok(Option<String>),
    /// `-ERR`, and the session goes on.
    Err,
    /// `+OK`, then these lines of a listing (`n size` or `n uidl`).
    Listing(Vec<String>),
    /// `+OK`, then a body that un-stuffs to these bytes.
    Body(Vec<u8>),
    /// `+OK`, then the server closes the connection.
    Bye,
    /// Nothing: the client hung up.
    Nothing,
}

/// What the server answered: its status line, and the un-stuffed body of
/// a multi-line response.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: String,
    pub body: Option<Vec<u8>>,
    /// Whether the server closed the connection after the response.
    pub closed: bool,
}

/// The session as RFC 1939 describes it, over the committed maildrop.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// The maildrop as every new session must see it.
    pub committed: Vec<Msg>,
    state: State,
}

#[derive(Clone, Debug, Default)]
enum State {
    /// AUTHORIZATION, no USER yet.
    #[default]
    Authorization,
    /// AUTHORIZATION after USER: whether it named the mailbox.
    User(bool),
    /// TRANSACTION: the deletion marks over the snapshot.
    Transaction(Vec<bool>),
    /// The session ended.
    Closed,
}

impl Model {
    pub fn new(committed: Vec<Msg>) -> Self {
        Model {
            committed,
            state: State::Authorization,
        }
    }

    /// A new connection.
    pub fn connect(&mut self) {
        self.state = State::Authorization;
    }

    pub fn closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The live message at number `n`, if there is one.
    fn live(&self, n: Num) -> Option<(u32, &Msg)> {
        let (State::Transaction(deleted), Num::N(n)) = (&self.state, n) else {
            return None;
        };
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        (!*deleted.get(i)?).then(|| (n, &self.committed[i]))
    }

    fn listing(&self, f: impl Fn(&Msg) -> String) -> Vec<String> {
        let State::Transaction(deleted) = &self.state else {
            return vec![];
        };
        self.committed
            .iter()
            .enumerate()
            .filter(|(i, _)| !deleted[*i])
            .map(|(i, m)| format!("{} {}", i + 1, f(m)))
            .collect()
    }

    fn stat(&self) -> (usize, u64) {
        let State::Transaction(deleted) = &self.state else {
            return (0, 0);
        };
        self.committed
            .iter()
            .zip(deleted)
            .filter(|(_, d)| !**d)
            .fold((0, 0), |(n, o), (m, _)| (n + 1, o + m.size()))
    }

    /// What `cmd` must get now; moves the model to the state after it.
    pub fn step(&mut self, cmd: &Cmd) -> Expect {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let (expect, next) = match (state, cmd) {
            (_, Cmd::Drop) => (Expect::Nothing, State::Closed),
            (State::Closed, _) => (Expect::Nothing, State::Closed),
            (State::Transaction(deleted), Cmd::Quit) => {
                // UPDATE: the marks become real.
                let mut i = 0;
                self.committed.retain(|_| {
                    i += 1;
                    !deleted[i - 1]
                });
                (Expect::Bye, State::Closed)
            }
            (_, Cmd::Quit) => (Expect::Bye, State::Closed),
            (State::Authorization | State::User(_), Cmd::User(right)) => {
                (Expect::Ok(None), State::User(*right))
            }
            (State::User(right), Cmd::Pass(pass)) => {
                if right && *pass {
                    let marks = vec![false; self.committed.len()];
                    (Expect::Ok(None), State::Transaction(marks))
                } else {
                    (Expect::Err, State::Authorization)
                }
            }
            (State::Transaction(deleted), cmd) => {
                self.state = State::Transaction(deleted);
                let expect = self.transaction(cmd);
                let next = std::mem::replace(&mut self.state, State::Closed);
                (expect, next)
            }
            // PASS without USER forgets nothing; anything else before
            // login is a wrong-state or bad command.
            (_, Cmd::Pass(_)) => (Expect::Err, State::Authorization),
            (state, _) => (Expect::Err, state),
        };
        self.state = next;
        expect
    }

    fn transaction(&mut self, cmd: &Cmd) -> Expect {
        match cmd {
            Cmd::Stat => {
                let (n, octets) = self.stat();
                Expect::Ok(Some(format!("{n} {octets}")))
            }
            Cmd::List(None) => Expect::Listing(self.listing(|m| m.size().to_string())),
            Cmd::Uidl(None) => Expect::Listing(self.listing(|m| m.uidl.clone())),
            Cmd::List(Some(n)) => match self.live(*n) {
                Some((n, m)) => Expect::Ok(Some(format!("{n} {}", m.size()))),
                None => Expect::Err,
            },
            Cmd::Uidl(Some(n)) => match self.live(*n) {
                Some((n, m)) => Expect::Ok(Some(format!("{n} {}", m.uidl))),
                None => Expect::Err,
            },
            Cmd::Retr(n) => match self.live(*n) {
                Some((_, m)) => Expect::Body(m.retr()),
                None => Expect::Err,
            },
            Cmd::Top(n, k) => match self.live(*n) {
                Some((_, m)) => Expect::Body(m.top(*k)),
                None => Expect::Err,
            },
            Cmd::Dele(n) => match self.live(*n) {
                Some((n, _)) => {
                    if let State::Transaction(deleted) = &mut self.state {
                        deleted[n as usize - 1] = true;
                    }
                    Expect::Ok(None)
                }
                None => Expect::Err,
            },
            Cmd::Rset => {
                if let State::Transaction(deleted) = &mut self.state {
                    deleted.iter_mut().for_each(|d| *d = false);
                }
                Expect::Ok(None)
            }
            Cmd::Noop => Expect::Ok(None),
            // USER and PASS after login, junk: -ERR, the session goes on.
            _ => Expect::Err,
        }
    }
}

/// Compares a response with what the model expects; the error says how
/// they differ.
pub fn check(expect: &Expect, got: &Response) -> Result<(), String> {
    let ok = got.status == "+OK" || got.status.starts_with("+OK ");
    let text = got.status.strip_prefix("+OK ").unwrap_or("");
    let fail = |what: &str| Err(format!("expected {expect:?}, {what}: got {got:?}"));
    match expect {
        Expect::Nothing => return Ok(()),
        Expect::Err => {
            if !got.status.starts_with("-ERR") {
                return fail("not -ERR");
            }
        }
        _ if !ok => return fail("not +OK"),
        Expect::Ok(Some(want)) if text != want => return fail("wrong text"),
        Expect::Ok(_) | Expect::Bye => {}
        Expect::Listing(lines) => {
            let body = got.body.as_deref().unwrap_or_default();
            let mut want: Vec<u8> = Vec::new();
            for l in lines {
                want.extend_from_slice(l.as_bytes());
                want.extend_from_slice(b"\r\n");
            }
            if body != want {
                return fail("wrong listing");
            }
        }
        Expect::Body(want) => {
            if got.body.as_deref() != Some(want) {
                let got_body = match &got.body {
                    Some(b) => format!("\"{}\"", b.escape_ascii()),
                    None => "no body".into(),
                };
                return Err(format!(
                    "expected the body \"{}\", got {got_body} (status {:?})",
                    want.escape_ascii(),
                    got.status
                ));
            }
        }
    }
    if matches!(expect, Expect::Bye) != got.closed {
        return fail(if got.closed {
            "the server closed the connection"
        } else {
            "the server did not close the connection"
        });
    }
    Ok(())
}
