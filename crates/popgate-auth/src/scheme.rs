//! Dovecot password schemes: verifying and producing `{SCHEME}data` strings.
//!
//! Supported: `ARGON2ID` and `ARGON2I` (PHC strings, as libsodium writes
//! them), `BLF-CRYPT` (bcrypt `$2y$`/`$2b$`/`$2a$`), `SHA512-CRYPT` (`$6$`),
//! `SHA256-CRYPT` (`$5$`), `MD5-CRYPT` (`$1$`, and Dovecot's old `MD5`),
//! the digest schemes of old installations and LDAP (`PLAIN-MD5`,
//! `LDAP-MD5`, `SMD5`, `SHA`, `SSHA`, `SHA256`, `SSHA256`, `SHA512`,
//! `SSHA512`; see [`digest`]), `PLAIN` (aliases `CLEARTEXT`, `CLEAR`) and
//! `CRYPT`, which is also what a string without a `{SCHEME}` prefix means:
//! the algorithm is then picked from the data's `$id$`. OpenLDAP's
//! `{ARGON2}` is `CRYPT` too. A digest scheme takes Dovecot's `.hex` and
//! `.b64` suffixes (`{SHA256.HEX}...`).
//!
//! Errors never contain the stored hash or the password.

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use subtle::ConstantTimeEq;

mod cost;
pub mod digest;

pub use cost::{CostLimits, check_cost, cost_class, most_common_class};
use digest::{Algo, DigestScheme, Encoding};

/// A Dovecot password scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `ARGON2ID`: `$argon2id$v=19$m=..,t=..,p=..$salt$hash`.
    Argon2id,
    /// `ARGON2I`: `$argon2i$...`; verified, and produced on request.
    Argon2i,
    /// `BLF-CRYPT`: bcrypt, `$2y$` (also `$2b$`, `$2a$`).
    BlfCrypt,
    /// `SHA512-CRYPT`: `$6$[rounds=N$]salt$hash`.
    Sha512Crypt,
    /// `SHA256-CRYPT`: `$5$[rounds=N$]salt$hash`.
    Sha256Crypt,
    /// `MD5-CRYPT`: `$1$salt$hash`. Weak; for old installations.
    Md5Crypt,
    /// `MD5`: Dovecot's old name; MD5-crypt for `$1$` data, else PLAIN-MD5.
    Md5,
    /// `PLAIN-MD5`: the MD5 of the password, hex.
    PlainMd5,
    /// `LDAP-MD5`: the MD5 of the password, base64.
    LdapMd5,
    /// `SMD5`: salted MD5, base64.
    Smd5,
    /// `SHA` (also `SHA1`): the SHA-1 of the password, base64.
    Sha,
    /// `SSHA`: salted SHA-1, base64.
    Ssha,
    /// `SHA256`: base64.
    Sha256,
    /// `SSHA256`: salted SHA-256, base64.
    Ssha256,
    /// `SHA512`: base64.
    Sha512,
    /// `SSHA512`: salted SHA-512, base64.
    Ssha512,
    /// `PLAIN` (also `CLEARTEXT`, `CLEAR`): the password itself.
    Plain,
    /// `CRYPT`, or no prefix: a `$id$` crypt string of one of the above.
    Crypt,
}

impl Scheme {
    /// Every scheme, for `--help` texts and tests.
    pub const ALL: [Scheme; 18] = [
        Scheme::Argon2id,
        Scheme::Argon2i,
        Scheme::BlfCrypt,
        Scheme::Sha512Crypt,
        Scheme::Sha256Crypt,
        Scheme::Md5Crypt,
        Scheme::Md5,
        Scheme::PlainMd5,
        Scheme::LdapMd5,
        Scheme::Smd5,
        Scheme::Sha,
        Scheme::Ssha,
        Scheme::Sha256,
        Scheme::Ssha256,
        Scheme::Sha512,
        Scheme::Ssha512,
        Scheme::Plain,
        Scheme::Crypt,
    ];

    /// Dovecot's name for the scheme, as written between the braces.
    pub const fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Md5Crypt => "MD5-CRYPT",
            Scheme::Md5 => "MD5",
            Scheme::PlainMd5 => "PLAIN-MD5",
            Scheme::LdapMd5 => "LDAP-MD5",
            Scheme::Smd5 => "SMD5",
            Scheme::Sha => "SHA",
            Scheme::Ssha => "SSHA",
            Scheme::Sha256 => "SHA256",
            Scheme::Ssha256 => "SSHA256",
            Scheme::Sha512 => "SHA512",
            Scheme::Ssha512 => "SSHA512",
            Scheme::Plain => "PLAIN",
            Scheme::Crypt => "CRYPT",
        }
    }

    /// Whether two hashes of one password differ (a random salt).
    pub const fn salted(self) -> bool {
        !matches!(
            self,
            Scheme::Plain
                | Scheme::PlainMd5
                | Scheme::LdapMd5
                | Scheme::Sha
                | Scheme::Sha256
                | Scheme::Sha512
        )
    }

    /// The digest scheme behind a digest variant (`MD5` as PLAIN-MD5).
    const fn digest(self) -> Option<DigestScheme> {
        let (algo, salted, encoding) = match self {
            Scheme::Md5 | Scheme::PlainMd5 => (Algo::Md5, false, Encoding::Hex),
            Scheme::LdapMd5 => (Algo::Md5, false, Encoding::Base64),
            Scheme::Smd5 => (Algo::Md5, true, Encoding::Base64),
            Scheme::Sha => (Algo::Sha1, false, Encoding::Base64),
            Scheme::Ssha => (Algo::Sha1, true, Encoding::Base64),
            Scheme::Sha256 => (Algo::Sha256, false, Encoding::Base64),
            Scheme::Ssha256 => (Algo::Sha256, true, Encoding::Base64),
            Scheme::Sha512 => (Algo::Sha512, false, Encoding::Base64),
            Scheme::Ssha512 => (Algo::Sha512, true, Encoding::Base64),
            _ => return None,
        };
        Some(DigestScheme {
            algo,
            salted,
            encoding,
        })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = SchemeError;

    /// Parses a scheme name, case-insensitively.
    fn from_str(s: &str) -> Result<Self, SchemeError> {
        let upper = s.to_ascii_uppercase();
        Ok(match upper.as_str() {
            "PLAIN" | "CLEARTEXT" | "CLEAR" => Scheme::Plain,
            "SHA1" => Scheme::Sha,
            name => match Scheme::ALL.iter().find(|s| s.name() == name) {
                Some(&s) => s,
                None => return Err(SchemeError::UnknownScheme(shorten(s))),
            },
        })
    }
}

/// Why a password could not be checked or hashed. None of these is
/// "wrong password" (that is `Ok(false)`); a login that meets one fails.
#[derive(Debug, thiserror::Error)]
pub enum SchemeError {
    /// The `{NAME}` prefix names a scheme popgate does not implement.
    #[error("unknown password scheme {0:?}")]
    UnknownScheme(String),
    /// `CRYPT` (or no prefix) data that is not a supported `$id$` string.
    #[error(
        "unsupported crypt hash {0} (supported: $2y$/$2b$/$2a$, $5$, $6$, $1$, $argon2id$, $argon2i$)"
    )]
    UnsupportedCrypt(String),
    /// The data does not parse as the scheme says it should.
    #[error("malformed {scheme} hash: {reason}")]
    Malformed {
        /// The scheme the data was read as.
        scheme: Scheme,
        /// What is wrong; never contains the data itself.
        reason: String,
    },
    /// The password cannot be hashed (or stored) with this scheme.
    #[error("cannot hash with {scheme}: {reason}")]
    Unhashable {
        /// The scheme asked for.
        scheme: Scheme,
        /// Why.
        reason: String,
    },
    /// The operating system's random generator failed.
    #[error("cannot get random bytes for a salt: {0}")]
    Random(getrandom::Error),
    /// The stored hash costs more to verify than [`CostLimits`] allow; it
    /// was not hashed.
    #[error("{scheme} hash above the cost cap: {found} exceeds {cap}")]
    AboveCap {
        /// The scheme the data was read as.
        scheme: Scheme,
        /// The parameter as stored, e.g. `m=1048576 KiB`.
        found: String,
        /// The cap by its setting's name, e.g. `argon2_max_memory = 65536 KiB`.
        cap: String,
    },
}

fn shorten(name: &str) -> String {
    name.chars().take(32).collect()
}

fn malformed(scheme: Scheme, reason: impl fmt::Display) -> SchemeError {
    SchemeError::Malformed {
        scheme,
        reason: reason.to_string(),
    }
}

fn unhashable(scheme: Scheme, reason: impl fmt::Display) -> SchemeError {
    SchemeError::Unhashable {
        scheme,
        reason: reason.to_string(),
    }
}

/// Splits `{SCHEME}data` into its scheme and data. Without a `{...}`
/// prefix the scheme is `CRYPT`, as in Dovecot's passwd-file; OpenLDAP's
/// `{ARGON2}` is `CRYPT` too. A `.hex`/`.b64` suffix is taken on a digest
/// scheme only (see [`parse_encoded`]).
pub fn parse(stored: &str) -> Result<(Scheme, &str), SchemeError> {
    parse_encoded(stored).map(|(scheme, _, data)| (scheme, data))
}

/// [`parse`], with the encoding a `.hex`/`.b64`/`.base64` suffix forces
/// on a digest scheme (`{SSHA256.HEX}...`, as Dovecot writes them).
pub fn parse_encoded(stored: &str) -> Result<(Scheme, Option<Encoding>, &str), SchemeError> {
    let Some((name, data)) = stored
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
    else {
        return Ok((Scheme::Crypt, None, stored));
    };
    if name.eq_ignore_ascii_case("ARGON2") {
        return Ok((Scheme::Crypt, None, data));
    }
    let (base, encoding) = match name.rsplit_once('.') {
        Some((base, suffix)) => match Encoding::from_suffix(suffix) {
            Some(e) => (base, Some(e)),
            None => return Err(SchemeError::UnknownScheme(shorten(name))),
        },
        None => (name, None),
    };
    let scheme: Scheme = base.parse()?;
    if encoding.is_some() && scheme.digest().is_none() {
        return Err(malformed(
            scheme,
            "a .hex or .b64 suffix is for the digest schemes only",
        ));
    }
    Ok((scheme, encoding, data))
}

/// Checks `password` against a stored `{SCHEME}data` string: `Ok(true)` on
/// a match, `Ok(false)` on a mismatch, an error when the stored string
/// cannot be used (unknown scheme, malformed data, above
/// [`CostLimits::DEFAULT`]). CPU-heavy for the real schemes: call it off
/// the async runtime ([`crate::hashing::Hashing::run`]).
pub fn verify(stored: &str, password: &[u8]) -> Result<bool, SchemeError> {
    verify_within(stored, password, &CostLimits::DEFAULT)
}

/// [`verify`] with explicit cost caps: a hash above them is
/// [`SchemeError::AboveCap`] and is not hashed.
pub fn verify_within(
    stored: &str,
    password: &[u8],
    limits: &CostLimits,
) -> Result<bool, SchemeError> {
    check_cost(stored, limits)?;
    let (scheme, encoding, data) = parse_encoded(stored)?;
    verify_data(scheme, encoding, data, password)
}

/// The scheme a stored string is verified with: `CRYPT` resolved by its
/// `$id$`, `MD5` with `$1$` data as `MD5-CRYPT`.
fn resolve(stored: &str) -> Result<(Scheme, &str), SchemeError> {
    let (scheme, data) = parse(stored)?;
    Ok((resolve_data(scheme, data)?, data))
}

fn resolve_data(scheme: Scheme, data: &str) -> Result<Scheme, SchemeError> {
    match scheme {
        Scheme::Crypt => {}
        Scheme::Md5 if data.starts_with("$1$") => return Ok(Scheme::Md5Crypt),
        other => return Ok(other),
    }
    Ok(match crypt_id(data) {
        Some("2y" | "2b" | "2a") => Scheme::BlfCrypt,
        Some("6") => Scheme::Sha512Crypt,
        Some("5") => Scheme::Sha256Crypt,
        Some("1") => Scheme::Md5Crypt,
        Some("argon2id") => Scheme::Argon2id,
        Some("argon2i") => Scheme::Argon2i,
        Some(id) => return Err(SchemeError::UnsupportedCrypt(format!("${id}$"))),
        None => {
            return Err(SchemeError::UnsupportedCrypt(
                "without a $id$ prefix".into(),
            ));
        }
    })
}

fn verify_data(
    scheme: Scheme,
    encoding: Option<Encoding>,
    data: &str,
    password: &[u8],
) -> Result<bool, SchemeError> {
    match resolve_data(scheme, data)? {
        Scheme::Plain => Ok(data.as_bytes().ct_eq(password).into()),
        Scheme::Argon2id => verify_argon2(scheme, "argon2id", data, password),
        Scheme::Argon2i => verify_argon2(scheme, "argon2i", data, password),
        Scheme::BlfCrypt => {
            if crypt_id(data).is_some_and(|id| ["2y", "2b", "2a"].contains(&id)) {
                bcrypt::verify(password, data).map_err(|e| malformed(scheme, e))
            } else {
                Err(malformed(scheme, "expected $2y$, $2b$ or $2a$"))
            }
        }
        Scheme::Sha512Crypt => verify_sha_crypt(scheme, "6", data, password),
        Scheme::Sha256Crypt => verify_sha_crypt(scheme, "5", data, password),
        Scheme::Md5Crypt => digest::verify_md5_crypt(data, password)
            .ok_or_else(|| malformed(scheme, "expected $1$salt$hash")),
        Scheme::Crypt => Err(SchemeError::UnsupportedCrypt("$?$".into())),
        resolved => {
            let Some(d) = resolved.digest() else {
                return Err(malformed(scheme, "not a digest scheme"));
            };
            let raw = digest::decode(d, encoding, data).map_err(|e| malformed(scheme, e))?;
            Ok(digest::verify(d, &raw, password))
        }
    }
}

/// The `id` of a `$id$...` string, when it looks like one (short, ASCII
/// alphanumeric), so that it can be named in an error without leaking data.
fn crypt_id(data: &str) -> Option<&str> {
    let id = data.strip_prefix('$')?.split('$').next()?;
    let plausible =
        !id.is_empty() && id.len() <= 10 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    (plausible && data.len() > id.len() + 2).then_some(id)
}

fn verify_argon2(
    scheme: Scheme,
    alg: &str,
    data: &str,
    password: &[u8],
) -> Result<bool, SchemeError> {
    let hash = argon2::PasswordHash::new(data).map_err(|e| malformed(scheme, e))?;
    if hash.algorithm.as_str() != alg {
        return Err(malformed(scheme, format_args!("expected ${alg}$")));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(malformed(scheme, "no salt or no hash"));
    }
    match argon2::Argon2::default().verify_password(password, &hash) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(malformed(scheme, e)),
    }
}

fn verify_sha_crypt(
    scheme: Scheme,
    id: &str,
    data: &str,
    password: &[u8],
) -> Result<bool, SchemeError> {
    if crypt_id(data) != Some(id) {
        return Err(malformed(scheme, format_args!("expected ${id}$")));
    }
    match sha_crypt::ShaCrypt::default().verify_password(password, data) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(malformed(scheme, e)),
    }
}

/// Cost parameters for [`hash_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    /// Argon2 memory cost in KiB.
    pub argon2_m_kib: u32,
    /// Argon2 iterations.
    pub argon2_t: u32,
    /// Argon2 lanes.
    pub argon2_p: u32,
    /// bcrypt cost (log2 of the rounds), 4..=31.
    pub bcrypt_cost: u32,
    /// SHA-crypt rounds, 1000..=999999999.
    pub sha_crypt_rounds: u32,
}

impl HashParams {
    /// Production defaults: argon2id with OWASP's first recommendation
    /// (m=19 MiB, t=2, p=1; Dovecot's libsodium default is m=64 MiB, t=3,
    /// which costs 3.4× the memory per concurrent login), bcrypt cost 10
    /// (OWASP's minimum; Dovecot's default of 5 is too weak) and SHA-crypt's
    /// default 5000 rounds, written without `rounds=` exactly as Dovecot
    /// does.
    pub const PRODUCTION: HashParams = HashParams {
        argon2_m_kib: 19 * 1024,
        argon2_t: 2,
        argon2_p: 1,
        bcrypt_cost: 10,
        sha_crypt_rounds: 5000,
    };

    /// The cheapest parameters each algorithm allows. For tests only.
    pub const INSECURE_FAST: HashParams = HashParams {
        argon2_m_kib: 8,
        argon2_t: 1,
        argon2_p: 1,
        bcrypt_cost: 4,
        sha_crypt_rounds: 1000,
    };
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams::PRODUCTION
    }
}

/// Hashes `password` with production parameters ([`HashParams::PRODUCTION`])
/// and a fresh random salt, giving the `{SCHEME}data` string for a
/// passwd-file (what `popgate pw --scheme X` prints).
pub fn hash(scheme: Scheme, password: &[u8]) -> Result<String, SchemeError> {
    hash_with(scheme, password, &HashParams::PRODUCTION)
}

/// [`hash`] with explicit cost parameters.
///
/// `CRYPT` produces a `$2y$` bcrypt string, as `doveadm pw -s CRYPT` does;
/// `MD5` an MD5-crypt string, as `doveadm pw -s MD5` does. The salted
/// digest schemes take an 8-byte salt. MD5-CRYPT and the digest schemes
/// are weak (one fast hash); they are here for old installations' tools.
/// `PLAIN` refuses passwords that a passwd-file line cannot hold (not
/// UTF-8, or containing `:`, CR or LF); `BLF-CRYPT` refuses passwords of 72
/// bytes or more, which bcrypt would silently truncate.
pub fn hash_with(
    scheme: Scheme,
    password: &[u8],
    params: &HashParams,
) -> Result<String, SchemeError> {
    let data = match scheme {
        Scheme::Plain => {
            let text = std::str::from_utf8(password)
                .map_err(|_| unhashable(scheme, "the password is not UTF-8"))?;
            if text.contains([':', '\r', '\n']) {
                return Err(unhashable(
                    scheme,
                    "a passwd-file cannot hold ':', CR or LF in a PLAIN password",
                ));
            }
            text.to_owned()
        }
        Scheme::Argon2id | Scheme::Argon2i => {
            let alg = match scheme {
                Scheme::Argon2i => argon2::Algorithm::Argon2i,
                _ => argon2::Algorithm::Argon2id,
            };
            let p =
                argon2::Params::new(params.argon2_m_kib, params.argon2_t, params.argon2_p, None)
                    .map_err(|e| unhashable(scheme, e))?;
            let salt: [u8; 16] = random()?;
            argon2::Argon2::new(alg, argon2::Version::V0x13, p)
                .hash_password_with_salt(password, &salt)
                .map_err(|e| unhashable(scheme, e))?
                .to_string()
        }
        Scheme::Md5Crypt | Scheme::Md5 => {
            digest::md5_crypt(password, &digest::md5_crypt_salt_from(random()?))
        }
        Scheme::PlainMd5
        | Scheme::LdapMd5
        | Scheme::Smd5
        | Scheme::Sha
        | Scheme::Ssha
        | Scheme::Sha256
        | Scheme::Ssha256
        | Scheme::Sha512
        | Scheme::Ssha512 => {
            let Some(d) = scheme.digest() else {
                return Err(unhashable(scheme, "not a digest scheme"));
            };
            let salt: [u8; 8] = random()?;
            d.encoding.encode(&digest::make(d, password, &salt))
        }
        Scheme::BlfCrypt | Scheme::Crypt => {
            bcrypt::non_truncating_hash_with_salt(password, params.bcrypt_cost, random()?)
                .map_err(|e| unhashable(scheme, e))?
                .format_for_version(bcrypt::Version::TwoY)
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let (alg, id) = match scheme {
                Scheme::Sha256Crypt => (sha_crypt::Algorithm::Sha256Crypt, "5"),
                _ => (sha_crypt::Algorithm::Sha512Crypt, "6"),
            };
            let p = sha_crypt::Params::new(params.sha_crypt_rounds)
                .map_err(|e| unhashable(scheme, e))?;
            // 12 random bytes are exactly the 16 salt characters crypt uses;
            // a longer salt would be written out but truncated when hashed.
            let salt: [u8; 12] = random()?;
            let mcf = sha_crypt::ShaCrypt::new(alg, p)
                .hash_password_with_salt(password, &salt)
                .map_err(|e| unhashable(scheme, e))?
                .to_string();
            // Dovecot (and glibc) omit the default `rounds=5000`.
            match mcf.strip_prefix(&format!("${id}$rounds=5000$")) {
                Some(rest) => format!("${id}${rest}"),
                None => mcf,
            }
        }
    };
    Ok(format!("{{{scheme}}}{data}"))
}

fn random<const N: usize>() -> Result<[u8; N], SchemeError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(SchemeError::Random)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypt_ids() {
        assert_eq!(crypt_id("$6$salt$hash"), Some("6"));
        assert_eq!(crypt_id("$argon2id$v=19$x"), Some("argon2id"));
        assert_eq!(crypt_id("$6$"), None);
        assert_eq!(crypt_id("secret"), None);
        assert_eq!(crypt_id("$a b$x"), None);
    }
}
