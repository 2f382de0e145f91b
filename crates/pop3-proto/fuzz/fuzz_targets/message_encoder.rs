//! Any stored message, in any chunking: the RETR body never contains a lone
//! "." line before the terminator, and un-stuffing gives the CRLF form back
//! (`scripts/fuzz message_encoder`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pop3_proto::fuzzing::message_encoder(data));
