//! Whatever bytes a customer writes into `dovecot-uidlist`: the parser
//! never panics, and what it accepts is written back and read again to
//! the same list (`scripts/fuzz uidlist`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| store_maildir::fuzzing::uidlist(data));
