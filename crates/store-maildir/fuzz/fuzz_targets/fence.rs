//! Whatever bytes are in `popgate-fence`: a token or none, never a panic,
//! and a token reads back from what popgate would write for it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(token) = store_maildir::fuzzing::fence(data) {
        assert_eq!(
            store_maildir::fuzzing::fence(format!("{token}\n").as_bytes()),
            Some(token)
        );
    }
});
