//! popgate's session against an RFC 1939 model, on every store.
//!
//! Random maildrops (bare LF, lone CR, lines that start with a dot, empty
//! messages, no final newline, long lines) and random sessions (logins
//! right and wrong, every TRANSACTION command with good and bad message
//! numbers, commands in the wrong state, QUIT or a dropped connection) are
//! played over TCP against the real server on Maildir, PostgreSQL and S3,
//! and every answer is compared with the model (`model.rs`). Each case ends
//! with an audit session that lists and reads the whole maildrop: what a
//! committed QUIT deleted is gone, nothing else is.
//!
//! `PROPTEST_CASES=N` runs N cases per store instead of the default.

mod harness;
mod model;
mod stores;
mod strategy;

use std::sync::Arc;

use popgate_store::MailStore;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tokio::runtime::Runtime;

use harness::Harness;
use model::{Cmd, Expect, Model, Msg, Num, Response, check};

/// Cases per store in `cargo test`: about a minute for the three stores.
const CASES: u32 = 120;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Plays `cases` random cases against the server over `store`; the error
/// is the shrunk case and its transcript.
fn property(rt: &Runtime, store: Arc<dyn MailStore>, cases: u32) -> Result<(), String> {
    let harness = rt.block_on(Harness::start(store));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy::case(), |case| {
        rt.block_on(harness.run(&case)).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, case)) => Err(format!("minimal failing case: {case:#?}\n{why}")),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn the_session_keeps_rfc_1939_on_maildir() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    if let Err(e) = property(&rt, stores::maildir(&dir), cases()) {
        panic!("{e}");
    }
}

#[test]
fn the_session_keeps_rfc_1939_on_postgres() {
    let rt = runtime();
    let _rt = rt.enter();
    let pg = rt.block_on(stores::Pg::new());
    if let Err(e) = property(&rt, pg.store(), cases()) {
        panic!("{e}");
    }
    rt.block_on(pg.drop());
}

#[test]
fn the_session_keeps_rfc_1939_on_s3() {
    let rt = runtime();
    let _rt = rt.enter();
    let s3 = stores::S3::start();
    if let Err(e) = property(&rt, s3.store(), cases()) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// The model can fail.

#[test]
fn a_store_that_misreports_sizes_is_caught_and_shrunk() {
    let rt = runtime();
    let e = property(&rt, stores::Broken::store(stores::Flaw::SizePlusOne), 64)
        .expect_err("LIST sizes one octet too large must fail the property");
    // Shrunk to empty messages (usually one; proptest's shrinking may stop
    // at two): their sizes must be 0, the store says 1 each.
    let mails = e
        .split_once("mails: [")
        .and_then(|(_, rest)| rest.split_once("],"))
        .map(|(mails, _)| mails)
        .unwrap_or_else(|| panic!("no mails in the case: {e}"));
    let mails: Vec<&str> = mails
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    assert!(
        !mails.is_empty() && mails.iter().all(|m| *m == "b\"\""),
        "{e}"
    );
    // The first wrong answer is a size of 0 (STAT's total, or a message's).
    let expected = e
        .split_once("expected Ok(Some(\"")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no expected answer: {e}"));
    assert!(
        expected
            .split_once('"')
            .is_some_and(|(a, _)| a.ends_with(" 0")),
        "{e}"
    );
}

#[test]
fn a_store_that_forgets_deletes_is_caught_by_the_next_session() {
    let rt = runtime();
    let e = property(&rt, stores::Broken::store(stores::Flaw::ForgetsDeletes), 64)
        .expect_err("a DELE that QUIT did not apply must fail the property");
    assert!(e.contains("-- audit"), "found in the audit session: {e}");
    assert!(e.contains("C: DELE 1"), "{e}");
}

fn msg(stored: &[u8]) -> Msg {
    Msg {
        stored: stored.to_vec(),
        uidl: "u1".into(),
    }
}

#[test]
fn the_model_sizes_messages_as_rfc_1939_sends_them() {
    // A bare LF gains its CR; a lone CR is content; an unterminated last
    // line is ended by RETR but not counted.
    let m = msg(b"a\nb\r\n.c\rd");
    assert_eq!(m.size(), 10);
    assert_eq!(m.retr(), b"a\r\nb\r\n.c\rd\r\n");
    assert_eq!(msg(b"x\r").retr(), b"x\r\n");
    assert_eq!(msg(b"").retr(), b"");
    let m = msg(b"S: 1\n\nl1\nl2\nl3");
    assert_eq!(m.top(0), b"S: 1\r\n\r\n");
    assert_eq!(m.top(2), b"S: 1\r\n\r\nl1\r\nl2\r\n");
    assert_eq!(m.top(9), m.retr());
}

/// A model logged in over `msgs`, as a session that just got `+OK`.
fn logged_in(msgs: &[&[u8]]) -> Model {
    let mut m = Model::new(msgs.iter().map(|b| msg(b)).collect());
    m.connect();
    m.step(&Cmd::User(true));
    assert_eq!(m.step(&Cmd::Pass(true)), Expect::Ok(None));
    m
}

fn ok(status: &str, body: Option<&[u8]>) -> Response {
    Response {
        status: status.into(),
        body: body.map(<[u8]>::to_vec),
        closed: false,
    }
}

#[test]
fn the_checker_rejects_wrong_answers() {
    let mut m = logged_in(&[b"a\n.b\n", b"x"]);
    // A size that counts the stored bytes, not the sent ones.
    let list = m.step(&Cmd::List(Some(Num::N(1))));
    assert!(check(&list, &ok("+OK 1 7", None)).is_ok());
    assert!(check(&list, &ok("+OK 1 5", None)).is_err());
    // A body still dot-stuffed, or with its bare LF.
    let retr = m.step(&Cmd::Retr(Num::N(1)));
    assert!(check(&retr, &ok("+OK", Some(b"a\r\n.b\r\n"))).is_ok());
    assert!(check(&retr, &ok("+OK", Some(b"a\r\n..b\r\n"))).is_err());
    assert!(check(&retr, &ok("+OK", Some(b"a\n.b\n"))).is_err());
    let top = m.step(&Cmd::Top(Num::N(1), 0));
    assert!(
        check(&top, &ok("+OK", Some(b"a\r\n.b\r\n"))).is_ok(),
        "no blank line: all header"
    );
    // A deleted message still listed, or still readable.
    assert!(check(&m.step(&Cmd::Dele(Num::N(1))), &ok("+OK", None)).is_ok());
    let listing = m.step(&Cmd::List(None));
    assert!(check(&listing, &ok("+OK", Some(b"2 1\r\n"))).is_ok());
    assert!(check(&listing, &ok("+OK", Some(b"1 7\r\n2 1\r\n"))).is_err());
    assert!(check(&m.step(&Cmd::Retr(Num::N(1))), &ok("+OK", Some(b"a\r\n"))).is_err());
    // A bad message number accepted.
    assert!(check(&m.step(&Cmd::Dele(Num::Bad("0"))), &ok("+OK", None)).is_err());
    // QUIT answered but the connection left open.
    assert!(check(&m.step(&Cmd::Quit), &ok("+OK", None)).is_err());
    assert_eq!(m.committed.len(), 1, "QUIT applied the DELE");
    // Before login, TRANSACTION commands are -ERR.
    let mut m = Model::new(vec![msg(b"x")]);
    m.connect();
    assert!(check(&m.step(&Cmd::Stat), &ok("+OK 1 1", None)).is_err());
    let top = logged_in(&[b"h\r\n\r\nb1\r\nb2\r\n"]).step(&Cmd::Top(Num::N(1), 1));
    assert!(check(&top, &ok("+OK", Some(b"h\r\n\r\nb1\r\n"))).is_ok());
    assert!(check(&top, &ok("+OK", Some(b"h\r\n\r\nb1\r\nb2\r\n"))).is_err());
}

#[test]
fn a_dropped_session_deletes_nothing_in_the_model() {
    let mut m = logged_in(&[b"a", b"b"]);
    m.step(&Cmd::Dele(Num::N(1)));
    assert_eq!(m.step(&Cmd::Drop), Expect::Nothing);
    assert_eq!(m.committed.len(), 2);
}
