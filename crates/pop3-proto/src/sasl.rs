//! SASL (RFC 5034) pieces that are pure bytes: base64 and the PLAIN message.

use crate::command::Secret;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};

/// RFC 4648 base64 with padding, as SASL (RFC 5034) sends it: padding is
/// required and must be canonical, any character outside the alphabet is
/// refused. Non-zero bits in the last character are accepted, as they
/// always were here.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

pub fn base64_encode(input: &[u8]) -> String {
    BASE64.encode(input)
}

/// Strict base64 (RFC 4648, padded). `None` on any invalid input.
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    BASE64.decode(input).ok()
}

/// A decoded SASL PLAIN message (RFC 4616): `authzid NUL authcid NUL passwd`.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain {
    pub authzid: String,
    pub authcid: String,
    pub password: Secret,
}

/// Decodes a base64 PLAIN response. `None` when malformed.
pub fn decode_plain(response: &[u8]) -> Option<Plain> {
    let raw = base64_decode(response)?;
    let mut parts = raw.splitn(3, |&b| b == 0);
    let authzid = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let authcid = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let password = parts.next()?.to_vec();
    if authcid.is_empty() || password.contains(&0) {
        return None;
    }
    Some(Plain {
        authzid,
        authcid,
        password: Secret(password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        for s in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            b"\0\xff\x10",
        ] {
            assert_eq!(
                base64_decode(base64_encode(s).as_bytes()).as_deref(),
                Some(s)
            );
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode(b"Zm9").is_none());
        assert!(base64_decode(b"Zm=v").is_none());
        assert!(base64_decode(b"Zm8=Zm8=").is_none());
        assert!(base64_decode(b"Z!8=").is_none());
        assert!(base64_decode(b"Zm8").is_none());
        assert!(base64_decode(b"Zm8==").is_none());
        assert!(base64_decode(b"Zg===").is_none());
        assert!(base64_decode(b"Zm 8=").is_none());
        assert!(base64_decode(b"Zm8=\r\n").is_none());
        assert!(base64_decode(b"Zm-_").is_none());
        assert_eq!(base64_decode(b"").as_deref(), Some(&b""[..]));
        // Padding as the encoder writes it; trailing bits as before.
        assert_eq!(base64_decode(b"Zm9=").as_deref(), Some(&b"fo"[..]));
    }

    #[test]
    fn plain_message() {
        let p = decode_plain(base64_encode(b"\0bob@acme.example\0pass word").as_bytes()).unwrap();
        assert_eq!(p.authzid, "");
        assert_eq!(p.authcid, "bob@acme.example");
        assert_eq!(p.password, Secret(b"pass word".to_vec()));
        assert!(decode_plain(base64_encode(b"bob\0secret").as_bytes()).is_none());
        assert!(decode_plain(base64_encode(b"\0\0secret").as_bytes()).is_none());
        assert!(decode_plain(b"not base64!").is_none());
    }
}
