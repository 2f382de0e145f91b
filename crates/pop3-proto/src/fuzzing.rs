//! Entry points for the fuzz targets (`crates/pop3-proto/fuzz`), also
//! replayed over the committed inputs by `cargo test`. Each panics on a
//! violation, for the fuzzer to report. Not an API.

use crate::crlf::CrlfNormaliser;
use crate::encode::{MessageEncoder, decode_multiline};
use crate::{Line, LineReader, command};

/// Whatever a client sends, split however the network splits it (the first
/// byte is the chunk size): the framer stays bounded and the parsers answer
/// every line.
pub fn session_input(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut reader = LineReader::new(64);
    for chunk in input.chunks(usize::from(split).max(1)) {
        reader.push(chunk);
        assert!(reader.buffered() <= 65);
        while let Some(line) = reader.next_line() {
            if let Line::Complete(line) = line {
                let _ = command::parse(&line);
                let _ = crate::sasl::decode_plain(&line);
            }
        }
    }
}

/// One command line: parsed without a panic, the same with its line ending
/// still on, and the same whatever the case of its keyword.
pub fn command_parser(line: &[u8]) {
    let parsed = command::parse(line);
    let mut ended = line.to_vec();
    ended.extend_from_slice(b"\r\n");
    assert_eq!(
        command::parse(&ended),
        parsed,
        "a trailing CRLF changes nothing"
    );
    let keyword = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let mut lower = line.to_vec();
    lower[..keyword].make_ascii_lowercase();
    assert_eq!(
        command::parse(&lower),
        parsed,
        "keywords are case-insensitive"
    );
}

/// Any stored message, in any chunking (the first byte is the chunk size):
/// the RETR body never holds a lone "." line before the terminator, and
/// un-stuffing gives the CRLF form back.
pub fn message_encoder(data: &[u8]) {
    let Some((&split, msg)) = data.split_first() else {
        return;
    };
    let mut enc = MessageEncoder::retr();
    let mut wire = Vec::new();
    for chunk in msg.chunks(usize::from(split).max(1)) {
        enc.feed(chunk, &mut wire);
    }
    enc.finish(&mut wire);
    let body = &wire[..wire.len() - 3];
    assert!(!body.split(|&b| b == b'\n').any(|l| l == b".\r"));
    let mut crlf = Vec::new();
    CrlfNormaliser::default().feed(msg, &mut crlf);
    let decoded = decode_multiline(&wire).expect("terminated");
    assert!(decoded.starts_with(&crlf));
}
