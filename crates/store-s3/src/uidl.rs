//! UIDLs from object keys.
//!
//! A message's UIDL is its key relative to the mailbox prefix when that is
//! a valid RFC 1939 unique-id (1-70 characters in 0x21..=0x7E) and does not
//! start with [`HASH_MARK`]. Any other key (too long, spaces, non-ASCII,
//! or starting with the mark) gets `~` followed by the 64 hex digits of the
//! SHA-256 of the relative key: 65 characters. A plain UIDL never starts
//! with `~`, so the two forms cannot collide, and both depend on nothing
//! but the key, so a UIDL is stable for as long as the object exists.

use sha2::{Digest, Sha256};

/// The first character of hash-based UIDLs; plain UIDLs never start with it.
pub const HASH_MARK: char = '~';

/// The UIDL of the object whose key, relative to the mailbox prefix, is `rel`.
pub fn uidl_for(rel: &str) -> String {
    let plain = (1..=70).contains(&rel.len())
        && !rel.starts_with(HASH_MARK)
        && rel.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if plain {
        return rel.to_owned();
    }
    let digest = Sha256::digest(rel.as_bytes());
    let mut out = String::with_capacity(65);
    out.push(HASH_MARK);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use popgate_store::valid_uidl;

    #[test]
    fn short_printable_keys_are_their_own_uidl() {
        assert_eq!(
            uidl_for("1762337700.123456.0011223344556677"),
            "1762337700.123456.0011223344556677"
        );
        assert_eq!(uidl_for("a/b<c>@d"), "a/b<c>@d");
        assert_eq!(uidl_for(&"x".repeat(70)), "x".repeat(70));
    }

    #[test]
    fn other_keys_are_hashed_and_valid() {
        let odd = [
            "".to_owned(),
            "x".repeat(71),
            "with space".to_owned(),
            "tab\there".to_owned(),
            "caf\u{e9}".to_owned(),
            "~looks-like-a-hash".to_owned(),
            "line\nbreak".to_owned(),
            "\u{7f}".to_owned(),
        ];
        let mut seen = std::collections::HashSet::new();
        for key in &odd {
            let u = uidl_for(key);
            assert!(valid_uidl(&u), "{key:?} -> {u:?}");
            assert!(
                u.starts_with(HASH_MARK) && u.len() == 65,
                "{key:?} -> {u:?}"
            );
            assert!(seen.insert(u), "distinct keys, distinct UIDLs");
        }
        // Stable.
        assert_eq!(uidl_for("with space"), uidl_for("with space"));
    }

    #[test]
    fn a_plain_key_cannot_take_a_hashed_uidl() {
        let hashed = uidl_for("with space");
        // The key spelled like the hash form is itself hashed, to another value.
        assert_ne!(uidl_for(&hashed), hashed);
    }
}
