//! Random maildrops and random sessions, built so that a failure shrinks to
//! a short case that reads as a POP3 transcript.

use std::fmt;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::model::{Cmd, Num};

/// A message as delivered; printed as an escaped byte string.
#[derive(Clone)]
pub struct Mail(pub Vec<u8>);

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() > 200 {
            // A long line: its start, its end and its length are what matter.
            let (head, tail) = (&self.0[..80], &self.0[self.0.len() - 80..]);
            return write!(
                f,
                "b\"{}...{}\" ({} bytes)",
                head.escape_ascii(),
                tail.escape_ascii(),
                self.0.len()
            );
        }
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// One test case: the maildrop, then the sessions one after the other.
#[derive(Clone, Debug)]
pub struct Case {
    pub mails: Vec<Mail>,
    pub sessions: Vec<Vec<Cmd>>,
}

/// Line content: letters, spaces, dots (a line may start with one, or be
/// one), lone CRs; now and then a long line, or one past the server's
/// 64 KiB read chunk.
fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => vec(select(b"ab .:\r".to_vec()), 0..8),
        2 => select(vec![&b"."[..], b"..", b".\r", b"From x"]).prop_map(<[u8]>::to_vec),
        1 => (0usize..3, 990usize..2100).prop_map(|(dots, len)| long(dots, len)),
        1 => Just(long(1, 66_000)),
    ]
}

fn long(dots: usize, len: usize) -> Vec<u8> {
    let mut l = vec![b'.'; dots];
    l.extend((0..len).map(|i| if i % 77 == 76 { b'.' } else { b'x' }));
    l
}

/// A line ending: bare LF, CRLF, or a lone CR (which is content).
fn ending() -> impl Strategy<Value = &'static [u8]> {
    select(vec![&b"\n"[..], b"\r\n", b"\r\n", b"\r"])
}

fn lines(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec((text(), ending()), 0..max).prop_map(|ls| {
        ls.into_iter()
            .flat_map(|(mut t, e)| {
                t.extend_from_slice(e);
                t
            })
            .collect()
    })
}

/// A message: header lines, maybe the blank line, body lines, maybe an
/// unterminated last line. Empty messages come out too.
fn mail() -> impl Strategy<Value = Mail> {
    (
        lines(3),
        proptest::option::of(ending()),
        lines(6),
        vec(select(b"ab.\r".to_vec()), 0..4),
    )
        .prop_map(|(head, blank, body, last)| {
            let mut m = head;
            m.extend_from_slice(blank.unwrap_or_default());
            m.extend_from_slice(&body);
            m.extend_from_slice(&last);
            Mail(m)
        })
}

/// A message number: mostly real ones (some past the end), sometimes one
/// that is no number.
fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        9 => (1u32..=7).prop_map(Num::N),
        1 => select(vec!["0", "-1", "abc", "4294967296", "1x"]).prop_map(Num::Bad),
    ]
}

/// Any command but the ones that end a session.
fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        2 => Just(Cmd::Stat),
        2 => proptest::option::of(num()).prop_map(Cmd::List),
        2 => proptest::option::of(num()).prop_map(Cmd::Uidl),
        3 => num().prop_map(Cmd::Retr),
        2 => (num(), prop_oneof![4 => 0u32..4, 1 => Just(1000u32)]).prop_map(|(n, k)| Cmd::Top(n, k)),
        4 => num().prop_map(Cmd::Dele),
        1 => Just(Cmd::Rset),
        1 => Just(Cmd::Noop),
        1 => any::<bool>().prop_map(Cmd::User),
        1 => any::<bool>().prop_map(Cmd::Pass),
        1 => Just(Cmd::Junk),
    ]
}

/// A session: a few commands before logging in (wrong passwords, commands
/// in the wrong state), usually the login, commands, then QUIT or a drop.
fn session() -> impl Strategy<Value = Vec<Cmd>> {
    (
        vec(cmd(), 0..3),
        prop_oneof![9 => Just(true), 1 => Just(false)],
        vec(cmd(), 0..12),
        prop_oneof![2 => Just(Cmd::Quit), 1 => Just(Cmd::Drop)],
    )
        .prop_map(|(before, login, ops, end)| {
            let mut s = before;
            if login {
                s.extend([Cmd::User(true), Cmd::Pass(true)]);
            }
            s.extend(ops);
            s.push(end);
            s
        })
}

pub fn case() -> impl Strategy<Value = Case> {
    (vec(mail(), 0..6), vec(session(), 1..4)).prop_map(|(mails, sessions)| Case { mails, sessions })
}

/// The session that ends every case: the whole maildrop, listed and read.
pub fn audit(messages: usize) -> Vec<Cmd> {
    let mut s = vec![
        Cmd::User(true),
        Cmd::Pass(true),
        Cmd::Stat,
        Cmd::List(None),
        Cmd::Uidl(None),
    ];
    s.extend((1..=messages as u32).map(|n| Cmd::Retr(Num::N(n))));
    s.push(Cmd::Quit);
    s
}
