//! The PROXY v1 and v2 header parsers on arbitrary bytes: they must answer
//! (a header or an error), never panic (`scripts/fuzz proxy_header`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| popgate_server::fuzzing::proxy_header(data));
