//! Whatever bytes are in `popgate-fence`: a token or none, never a panic,
//! and a token reads back from what popgate would write for it
//! (`scripts/fuzz fence`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| store_maildir::fuzzing::fence(data));
