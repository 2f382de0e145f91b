//! Any stored message, in any chunking: the RETR body never contains a lone
//! "." line before the terminator, and un-stuffing gives the CRLF form back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop3_proto::crlf::CrlfNormaliser;
use pop3_proto::encode::{MessageEncoder, decode_multiline};

fuzz_target!(|data: &[u8]| {
    let Some((&split, msg)) = data.split_first() else { return };
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
});
