//! The digest schemes of old installations and of LDAP's `userPassword`
//! (RFC 2307, OpenLDAP's `pw-sha2`), and MD5-crypt, as Dovecot reads them:
//!
//! - `PLAIN-MD5` (hex), `LDAP-MD5` (base64), `SHA`/`SHA1`, `SHA256`,
//!   `SHA512` (base64): the digest of the password;
//! - `SMD5`, `SSHA`, `SSHA256`, `SSHA512` (base64): the digest of the
//!   password followed by a salt, then the salt;
//! - `MD5-CRYPT`: `$1$salt$hash`, FreeBSD's MD5-based crypt (1000 rounds);
//!   `MD5` is Dovecot's old name, MD5-crypt when the data starts with
//!   `$1$` and PLAIN-MD5 otherwise.
//!
//! A `.hex` or `.b64` (`.base64`) suffix on the scheme name forces the
//! data's encoding, as in Dovecot (`{SHA256.HEX}...`). Without one, an
//! unsalted digest whose length is that of the hex (or base64) form is read
//! as such, whatever the scheme's default, as Dovecot guesses. Every
//! comparison is constant-time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::Md5;
use sha1::Sha1;
use sha2::digest::Digest;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

/// How the bytes of a digest are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Lower- or upper-case hexadecimal.
    Hex,
    /// Standard base64, padded.
    Base64,
}

impl Encoding {
    /// The encoding of a `.hex`/`.b64`/`.base64` suffix, case-insensitively.
    pub fn from_suffix(suffix: &str) -> Option<Encoding> {
        match suffix.to_ascii_uppercase().as_str() {
            "HEX" => Some(Encoding::Hex),
            "B64" | "BASE64" => Some(Encoding::Base64),
            _ => None,
        }
    }

    pub fn encode(self, raw: &[u8]) -> String {
        match self {
            Encoding::Hex => raw.iter().map(|b| format!("{b:02x}")).collect(),
            Encoding::Base64 => STANDARD.encode(raw),
        }
    }

    pub fn decode(self, text: &str) -> Option<Vec<u8>> {
        let text = text.trim();
        match self {
            Encoding::Hex => {
                if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                (0..text.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
                    .collect()
            }
            Encoding::Base64 => STANDARD.decode(text).ok(),
        }
    }
}

/// A digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    pub fn digest_len(self) -> usize {
        match self {
            Algo::Md5 => 16,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }

    /// The digest of `password` followed by `salt`.
    pub fn hash(self, password: &[u8], salt: &[u8]) -> Vec<u8> {
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

/// A digest scheme: its algorithm, whether it is salted and its default
/// encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestScheme {
    pub algo: Algo,
    pub salted: bool,
    pub encoding: Encoding,
}

/// Decodes stored digest data: the forced encoding, else (unsalted) the
/// one whose length fits, else the scheme's default. `Err` says why,
/// without the data.
pub fn decode(
    scheme: DigestScheme,
    forced: Option<Encoding>,
    data: &str,
) -> Result<Vec<u8>, &'static str> {
    let data = data.trim();
    let encoding = forced.unwrap_or_else(|| {
        let len = scheme.algo.digest_len();
        if scheme.salted {
            scheme.encoding
        } else if data.len() == 2 * len && data.bytes().all(|b| b.is_ascii_hexdigit()) {
            Encoding::Hex
        } else if data.len() == len.div_ceil(3) * 4 {
            Encoding::Base64
        } else {
            scheme.encoding
        }
    });
    let raw = encoding.decode(data).ok_or(match encoding {
        Encoding::Hex => "not hex",
        Encoding::Base64 => "not base64",
    })?;
    let len = scheme.algo.digest_len();
    if scheme.salted && raw.len() <= len {
        return Err("shorter than the digest and a salt");
    }
    if !scheme.salted && raw.len() != len {
        return Err("not the length of the digest");
    }
    Ok(raw)
}

/// Checks `password` against decoded digest data (digest, then salt).
pub fn verify(scheme: DigestScheme, raw: &[u8], password: &[u8]) -> bool {
    let (expected, salt) = raw.split_at(scheme.algo.digest_len().min(raw.len()));
    scheme.algo.hash(password, salt).ct_eq(expected).into()
}

/// The raw stored form for `password`: digest, then `salt` when salted.
pub fn make(scheme: DigestScheme, password: &[u8], salt: &[u8]) -> Vec<u8> {
    let salt = if scheme.salted { salt } else { &[] };
    let mut raw = scheme.algo.hash(password, salt);
    raw.extend_from_slice(salt);
    raw
}

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The salt of a `$1$salt$hash` string: at most 8 characters, up to the
/// next `$`. `None` when `data` is not `$1$...`.
pub fn md5_crypt_salt(data: &str) -> Option<&str> {
    let rest = data.strip_prefix("$1$")?;
    let salt = rest.split('$').next().unwrap_or_default();
    Some(&salt[..salt.len().min(8)])
}

/// FreeBSD's MD5-crypt of `password` with `salt` (at most 8 characters
/// used): `$1$salt$hash`, as glibc's `crypt` and Dovecot's MD5-CRYPT.
pub fn md5_crypt(password: &[u8], salt: &str) -> String {
    let salt = &salt.as_bytes()[..salt.len().min(8)];
    let alt = {
        let mut d = Md5::new();
        d.update(password);
        d.update(salt);
        d.update(password);
        d.finalize()
    };
    let mut d = Md5::new();
    d.update(password);
    d.update(b"$1$");
    d.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        d.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            d.update([0u8]);
        } else {
            d.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = d.finalize();
    for round in 0..1000 {
        let mut d = Md5::new();
        if round & 1 == 1 {
            d.update(password);
        } else {
            d.update(fin);
        }
        if round % 3 != 0 {
            d.update(salt);
        }
        if round % 7 != 0 {
            d.update(password);
        }
        if round & 1 == 1 {
            d.update(fin);
        } else {
            d.update(password);
        }
        fin = d.finalize();
    }
    let mut out = String::with_capacity(34);
    out.push_str("$1$");
    out.push_str(std::str::from_utf8(salt).unwrap_or_default());
    out.push('$');
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let f = |i: usize| u32::from(fin[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((f(a) << 16) | (f(b) << 8) | f(c), 4);
    }
    put(f(11), 2);
    out
}

/// Checks `password` against a `$1$salt$hash` string in constant time.
/// `None` when the string is not one.
pub fn verify_md5_crypt(data: &str, password: &[u8]) -> Option<bool> {
    let salt = md5_crypt_salt(data)?;
    // `$1$` + salt + `$` + 22 characters.
    if data.len() != 3 + salt.len() + 1 + 22 || data.as_bytes()[3 + salt.len()] != b'$' {
        return None;
    }
    Some(
        md5_crypt(password, salt)
            .as_bytes()
            .ct_eq(data.as_bytes())
            .into(),
    )
}

/// A random MD5-crypt salt of 8 characters from `bytes`.
pub fn md5_crypt_salt_from(bytes: [u8; 8]) -> String {
    bytes
        .iter()
        .map(|b| ITOA64[usize::from(b & 0x3f)] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_crypt_matches_glibc() {
        // `openssl passwd -1 -salt saltsalt secret`, and `-salt ab ''`.
        assert_eq!(
            md5_crypt(b"secret", "saltsalt"),
            "$1$saltsalt$9xy1btjgzLYfb7hivXtC//"
        );
        assert_eq!(md5_crypt(b"", "ab"), "$1$ab$rn6aQS/o7141mj179E/zA.");
    }

    #[test]
    fn encodings_round_trip() {
        for e in [Encoding::Hex, Encoding::Base64] {
            assert_eq!(e.decode(&e.encode(b"\x00\xffab")).unwrap(), b"\x00\xffab");
        }
        assert!(Encoding::Hex.decode("abc").is_none());
        assert!(Encoding::Hex.decode("zz").is_none());
        assert_eq!(Encoding::from_suffix("b64"), Some(Encoding::Base64));
        assert_eq!(Encoding::from_suffix("HEX"), Some(Encoding::Hex));
        assert_eq!(Encoding::from_suffix("rot13"), None);
    }
}
