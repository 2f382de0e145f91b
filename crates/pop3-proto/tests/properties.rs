//! Property tests: the parser and framer never panic on arbitrary bytes, and
//! encoding a message then undoing the stuffing gives the CRLF form back.

use pop3_proto::crlf::{CrlfCounter, CrlfNormaliser};
use pop3_proto::encode::{MessageEncoder, decode_multiline};
use pop3_proto::{Line, LineReader};
use proptest::prelude::*;

fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Biased towards the bytes that matter: dots, CR, LF.
    prop::collection::vec(
        prop_oneof![
            Just(b'.'),
            Just(b'\r'),
            Just(b'\n'),
            Just(b'a'),
            any::<u8>()
        ],
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parser_never_panics(line in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = pop3_proto::command::parse(&line);
    }

    #[test]
    fn framer_never_panics_and_stays_bounded(data in prop::collection::vec(any::<u8>(), 0..3000), split in 1usize..64) {
        let mut r = LineReader::new(100);
        for c in data.chunks(split) {
            r.push(c);
            prop_assert!(r.buffered() <= 101);
            while let Some(l) = r.next_line() {
                if let Line::Complete(l) = l { prop_assert!(l.len() <= 101); }
            }
        }
    }

    #[test]
    fn stuffing_round_trips(msg in message_bytes(), split in 1usize..50) {
        let mut enc = MessageEncoder::retr();
        let mut wire = Vec::new();
        for c in msg.chunks(split) {
            enc.feed(c, &mut wire);
        }
        enc.finish(&mut wire);

        let mut crlf = Vec::new();
        CrlfNormaliser::default().feed(&msg, &mut crlf);
        let mut counter = CrlfCounter::default();
        msg.chunks(split).for_each(|c| counter.feed(c));
        prop_assert_eq!(counter.finish(), crlf.len() as u64, "size equals the normalised length");

        // The terminator is the only line that is a lone dot.
        let body = &wire[..wire.len() - 3];
        prop_assert!(!body.split(|&b| b == b'\n').any(|l| l == b".\r"));
        let mut decoded = decode_multiline(&wire).expect("terminated");
        // RETR may end an unterminated last line.
        if !crlf.is_empty() && !crlf.ends_with(b"\n") {
            prop_assert!(decoded.ends_with(b"\r\n") || decoded.ends_with(b"\n"));
            let cut = if crlf.ends_with(b"\r") { 1 } else { 2 };
            decoded.truncate(decoded.len() - cut);
        }
        prop_assert_eq!(decoded, crlf);
    }

    #[test]
    fn top_is_a_prefix_of_retr(msg in message_bytes(), k in 0u32..5) {
        let mut retr = Vec::new();
        let mut e = MessageEncoder::retr();
        e.feed(&msg, &mut retr);
        e.finish(&mut retr);
        let mut top = Vec::new();
        let mut t = MessageEncoder::top(k);
        t.feed(&msg, &mut top);
        t.finish(&mut top);
        let top_body = &top[..top.len() - 3];
        prop_assert!(retr.starts_with(top_body) || retr.starts_with(&top_body[..top_body.len().saturating_sub(2)]));
    }

    /// RETR copies in spans; TOP with more lines than any message has goes
    /// line by line: the bytes on the wire are the same, however each is
    /// cut into chunks.
    #[test]
    fn retr_spans_equal_the_line_by_line_encoder(
        msg in prop_oneof![message_bytes(), crlf_text()],
        split in 1usize..80,
        other in 1usize..80,
    ) {
        let mut fast = Vec::new();
        let mut e = MessageEncoder::retr();
        msg.chunks(split).for_each(|c| e.feed(c, &mut fast));
        e.finish(&mut fast);
        let mut slow = Vec::new();
        let mut t = MessageEncoder::top(u32::MAX);
        msg.chunks(other).for_each(|c| t.feed(c, &mut slow));
        t.finish(&mut slow);
        prop_assert_eq!(fast, slow);
    }
}

/// Text lines as a store keeps them: CRLF, or bare LF, or no final newline,
/// some lines starting with a dot.
fn crlf_text() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        prop_oneof![
            Just(&b""[..]),
            Just(&b"."[..]),
            Just(&b".."[..]),
            Just(&b"a"[..])
        ],
        prop::collection::vec(prop_oneof![Just(b'x'), Just(b'.'), Just(b'\r')], 0..20),
        prop_oneof![
            4 => Just(&b"\r\n"[..]),
            1 => Just(&b"\n"[..]),
            1 => Just(&b""[..]),
            1 => Just(&b"\r"[..]),
        ],
    );
    prop::collection::vec(line, 0..30).prop_map(|lines| {
        lines
            .into_iter()
            .flat_map(|(start, body, end)| [start.to_vec(), body, end.to_vec()].concat())
            .collect()
    })
}
