//! Whatever a client sends, split however the network splits it: the framer
//! stays bounded and the parser answers every line (`scripts/fuzz session_input`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pop3_proto::fuzzing::session_input(data));
