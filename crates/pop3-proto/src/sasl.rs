//! SASL (RFC 5034) pieces that are pure bytes: base64 and the PLAIN message.

use crate::command::Secret;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict base64 (RFC 4648, padded). `None` on any invalid input.
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    if !input.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let quads = input.len() / 4;
    for (qi, q) in input.chunks(4).enumerate() {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && qi + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
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
