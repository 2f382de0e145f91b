//! The digest schemes that LDAP directories store in `userPassword`
//! (RFC 2307 and OpenLDAP's `pw-sha2`/`argon2` modules), on top of
//! [`crate::scheme`]:
//!
//! - `{SHA}`, `{SHA256}`, `{SHA512}`, `{MD5}`: base64 of the digest of the
//!   password;
//! - `{SSHA}`, `{SSHA256}`, `{SSHA512}`, `{SMD5}`: base64 of the digest of
//!   the password followed by a salt, then the salt;
//! - `{ARGON2}`: OpenLDAP's argon2 module, a `$argon2id$`/`$argon2i$` PHC
//!   string (checked as `CRYPT`).
//!
//! Every other prefix (`{CRYPT}`, `{ARGON2ID}`, `{BLF-CRYPT}`, no prefix,
//! ...) is [`crate::scheme::verify_within`]'s. Scheme names compare without
//! regard to case, as OpenLDAP's do. Errors never contain the stored value
//! or the password.

use md5::Md5;
use sha1::Sha1;
use sha2::digest::Digest;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::scheme::{self, CostLimits, SchemeError};

/// A digest scheme of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    fn len(self) -> usize {
        match self {
            Algo::Md5 => 16,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }

    fn hash(self, password: &[u8], salt: &[u8]) -> Vec<u8> {
        fn run<D: Digest>(password: &[u8], salt: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update(password);
            d.update(salt);
            d.finalize().to_vec()
        }
        match self {
            Algo::Md5 => run::<Md5>(password, salt),
            Algo::Sha1 => run::<Sha1>(password, salt),
            Algo::Sha256 => run::<Sha256>(password, salt),
            Algo::Sha512 => run::<Sha512>(password, salt),
        }
    }
}

/// The digest and whether it is salted, for a scheme name of this module.
fn digest_scheme(name: &str) -> Option<(Algo, bool)> {
    Some(match name.to_ascii_uppercase().as_str() {
        "MD5" => (Algo::Md5, false),
        "SMD5" => (Algo::Md5, true),
        "SHA" => (Algo::Sha1, false),
        "SSHA" => (Algo::Sha1, true),
        "SHA256" => (Algo::Sha256, false),
        "SSHA256" => (Algo::Sha256, true),
        "SHA512" => (Algo::Sha512, false),
        "SSHA512" => (Algo::Sha512, true),
        _ => return None,
    })
}

/// Why a stored value of a digest scheme cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    /// A scheme of [`crate::scheme`] refused it.
    #[error(transparent)]
    Scheme(#[from] SchemeError),
    /// The data of a digest scheme does not decode; never contains it.
    #[error("malformed {scheme} hash: {reason}")]
    Malformed {
        /// The scheme as written between the braces, upper case.
        scheme: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Splits a `{NAME}data` prefix off, if there is one.
fn split(stored: &str) -> Option<(&str, &str)> {
    stored.strip_prefix('{')?.split_once('}')
}

/// Checks `password` against a stored `userPassword` value: the digest
/// schemes above, `{ARGON2}`, or anything [`scheme::verify_within`] takes
/// (with its cost caps). `Ok(false)` is a wrong password.
pub fn verify_within(
    stored: &str,
    password: &[u8],
    limits: &CostLimits,
) -> Result<bool, StoredError> {
    match split(stored) {
        Some((name, data)) if name.eq_ignore_ascii_case("ARGON2") => {
            Ok(scheme::verify_within(data, password, limits)?)
        }
        Some((name, data)) => match digest_scheme(name) {
            Some((digest, salted)) => verify_digest(name, digest, salted, data, password),
            None => Ok(scheme::verify_within(stored, password, limits)?),
        },
        None => Ok(scheme::verify_within(stored, password, limits)?),
    }
}

fn verify_digest(
    name: &str,
    digest: Algo,
    salted: bool,
    data: &str,
    password: &[u8],
) -> Result<bool, StoredError> {
    let malformed = |reason| StoredError::Malformed {
        scheme: name.to_ascii_uppercase(),
        reason,
    };
    let raw = STANDARD
        .decode(data.trim())
        .map_err(|_| malformed("not base64"))?;
    let len = digest.len();
    let ok_len = if salted {
        raw.len() > len
    } else {
        raw.len() == len
    };
    if !ok_len {
        return Err(malformed(if salted {
            "shorter than the digest and a salt"
        } else {
            "not the length of the digest"
        }));
    }
    let (expected, salt) = raw.split_at(len);
    Ok(digest.hash(password, salt).ct_eq(expected).into())
}

/// What a stored value costs to verify, as [`scheme::cost_class`] gives it:
/// all values of one digest scheme cost the same (`SSHA`, `SHA256`, ...);
/// `{ARGON2}` is its PHC string's parameters.
pub fn cost_class(stored: &str) -> Result<String, StoredError> {
    match split(stored) {
        Some((name, data)) if name.eq_ignore_ascii_case("ARGON2") => Ok(scheme::cost_class(data)?),
        Some((name, _)) if digest_scheme(name).is_some() => Ok(name.to_ascii_uppercase()),
        _ => Ok(scheme::cost_class(stored)?),
    }
}

/// Hashes `password` as `{SSHA}` with a random 8-byte salt, as OpenLDAP's
/// `slappasswd` does. For tests and tools that write LDAP entries.
pub fn ssha(password: &[u8]) -> Result<String, SchemeError> {
    let mut salt = [0u8; 8];
    getrandom::fill(&mut salt).map_err(SchemeError::Random)?;
    let mut raw = Algo::Sha1.hash(password, &salt);
    raw.extend_from_slice(&salt);
    Ok(format!("{{SSHA}}{}", STANDARD.encode(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stored: &str, password: &str) -> bool {
        verify_within(stored, password.as_bytes(), &CostLimits::DEFAULT).unwrap()
    }

    #[test]
    fn slappasswd_values() {
        // `slappasswd -h {SSHA} -s secret` (salt "abcdefgh" fixed by hand)
        // and `-h {SHA}`, `-h {MD5}`, `-h {SMD5}`.
        let salt = b"abcdefgh";
        let mut raw = Sha1::digest(b"secret").to_vec();
        assert_eq!(STANDARD.encode(&raw), "5en6G6MezRroT3XKqkdPOmY/BfQ=");
        assert!(check("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"));
        assert!(check("{sha}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"));
        assert!(!check("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "Secret"));
        raw = Sha1::new()
            .chain_update(b"secret")
            .chain_update(salt)
            .finalize()
            .to_vec();
        raw.extend_from_slice(salt);
        let ssha = format!("{{SSHA}}{}", STANDARD.encode(&raw));
        assert!(check(&ssha, "secret"));
        assert!(!check(&ssha, "secret "));
        assert!(check("{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret"));
        let made = super::ssha(b"p\xc3\xa4ss").unwrap();
        assert!(verify_within(&made, "päss".as_bytes(), &CostLimits::DEFAULT).unwrap());
        assert_eq!(cost_class(&made).unwrap(), "SSHA");
    }

    #[test]
    fn sha2_values() {
        let raw = Sha256::digest(b"secret");
        assert!(check(
            &format!("{{SHA256}}{}", STANDARD.encode(raw)),
            "secret"
        ));
        let mut raw = Sha512::new()
            .chain_update(b"secret")
            .chain_update(b"NaCl")
            .finalize()
            .to_vec();
        raw.extend_from_slice(b"NaCl");
        assert!(check(
            &format!("{{SSHA512}}{}", STANDARD.encode(raw)),
            "secret"
        ));
    }

    #[test]
    fn other_schemes_are_the_scheme_modules() {
        let argon = scheme::hash_with(
            scheme::Scheme::Argon2id,
            b"secret",
            &scheme::HashParams::INSECURE_FAST,
        )
        .unwrap();
        let phc = argon.strip_prefix("{ARGON2ID}").unwrap();
        assert!(check(&format!("{{ARGON2}}{phc}"), "secret"));
        assert!(!check(&format!("{{ARGON2}}{phc}"), "wrong"));
        assert!(check(&format!("{{CRYPT}}{phc}"), "secret"));
        assert!(check(&argon, "secret"));
        assert!(check("{PLAIN}secret", "secret"));
        assert_eq!(
            cost_class(&format!("{{ARGON2}}{phc}")).unwrap(),
            scheme::cost_class(&argon).unwrap()
        );
    }

    #[test]
    fn malformed_values_are_errors_without_the_data() {
        let e = |s: &str| {
            verify_within(s, b"x", &CostLimits::DEFAULT)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(e("{SSHA}!!notbase64"), "malformed SSHA hash: not base64");
        assert!(e("{SSHA}5en6G6MezRroT3XKqkdPOmY/BfQ=").contains("salt"));
        assert!(e("{SHA}c2hvcnQ=").contains("length"));
        assert!(!e("{SHA}c2hvcnQ=").contains("c2hvcnQ"));
        assert!(e("{NTLM}x").contains("unknown password scheme"));
    }
}
