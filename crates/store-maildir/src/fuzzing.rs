//! Entry points for the fuzz targets (`crates/store-maildir/fuzz`): the
//! parsers of the metadata files a customer can write. Not an API.

use crate::uidlist::{Uidlist, new_guid};

/// Parses a `dovecot-uidlist`; what parses must write back and parse again
/// to the same list. Panics on a violation, for the fuzzer to report.
pub fn uidlist(data: &[u8]) {
    let Some(mut list) = Uidlist::parse(data, "fuzz") else {
        return;
    };
    list.guid.get_or_insert_with(new_guid);
    let again = Uidlist::parse(&list.serialize(), "fuzz");
    assert_eq!(again.as_ref(), Some(&list), "a written uidlist reads back");
    // What the store does with a list: index it, number a new file.
    let _ = list.index();
    let _ = list.add("fuzz.M1P1.host");
}

/// Parses a `popgate-fence`: a token or none, and a token reads back from
/// what popgate would write for it.
pub fn fence(data: &[u8]) {
    if let Some(token) = crate::fence::parse_fence(data) {
        let written = format!("{token}\n");
        assert_eq!(crate::fence::parse_fence(written.as_bytes()), Some(token));
    }
}
