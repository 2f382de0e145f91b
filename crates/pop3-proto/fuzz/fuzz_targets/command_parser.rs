//! Any command line: the parser answers without a panic, ignores a trailing
//! CRLF and the case of the keyword (`scripts/fuzz command_parser`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pop3_proto::fuzzing::command_parser(data));
