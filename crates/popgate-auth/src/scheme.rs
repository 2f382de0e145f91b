//! Dovecot password schemes: verifying and producing `{SCHEME}data` strings.
//!
//! Supported: `ARGON2ID` and `ARGON2I` (PHC strings, as libsodium writes
//! them), `BLF-CRYPT` (bcrypt `$2y$`/`$2b$`/`$2a$`), `SHA512-CRYPT` (`$6$`),
//! `SHA256-CRYPT` (`$5$`), `PLAIN` (aliases `CLEARTEXT`, `CLEAR`) and
//! `CRYPT`, which is also what a string without a `{SCHEME}` prefix means:
//! the algorithm is then picked from the data's `$id$`.
//!
//! Errors never contain the stored hash or the password.

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use subtle::ConstantTimeEq;

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
    /// `PLAIN` (also `CLEARTEXT`, `CLEAR`): the password itself.
    Plain,
    /// `CRYPT`, or no prefix: a `$id$` crypt string of one of the above.
    Crypt,
}

impl Scheme {
    /// Every scheme, for `--help` texts and tests.
    pub const ALL: [Scheme; 7] = [
        Scheme::Argon2id,
        Scheme::Argon2i,
        Scheme::BlfCrypt,
        Scheme::Sha512Crypt,
        Scheme::Sha256Crypt,
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
            Scheme::Plain => "PLAIN",
            Scheme::Crypt => "CRYPT",
        }
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
        Ok(match s.to_ascii_uppercase().as_str() {
            "ARGON2ID" => Scheme::Argon2id,
            "ARGON2I" => Scheme::Argon2i,
            "BLF-CRYPT" => Scheme::BlfCrypt,
            "SHA512-CRYPT" => Scheme::Sha512Crypt,
            "SHA256-CRYPT" => Scheme::Sha256Crypt,
            "PLAIN" | "CLEARTEXT" | "CLEAR" => Scheme::Plain,
            "CRYPT" => Scheme::Crypt,
            _ => return Err(SchemeError::UnknownScheme(shorten(s))),
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
        "unsupported crypt hash {0} (supported: $2y$/$2b$/$2a$, $5$, $6$, $argon2id$, $argon2i$)"
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
/// prefix the scheme is `CRYPT`, as in Dovecot's passwd-file.
pub fn parse(stored: &str) -> Result<(Scheme, &str), SchemeError> {
    if let Some(rest) = stored.strip_prefix('{')
        && let Some((name, data)) = rest.split_once('}')
    {
        return Ok((name.parse()?, data));
    }
    Ok((Scheme::Crypt, stored))
}

/// The most a stored hash may cost to verify. A login whose stored hash
/// is above one of these is refused without hashing: a passwd-file line or
/// a database row with `m=4194304` would otherwise make one login allocate
/// 4 GiB, and `$2y$31$` keep a core busy for days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostLimits {
    /// Argon2 memory cost (`m`), KiB.
    pub argon2_max_memory_kib: u32,
    /// Argon2 iterations (`t`).
    pub argon2_max_time: u32,
    /// Argon2 lanes (`p`).
    pub argon2_max_lanes: u32,
    /// bcrypt cost (log2 of the rounds).
    pub bcrypt_max_cost: u32,
    /// SHA-crypt `rounds=` (5000 when the hash does not say).
    pub sha_crypt_max_rounds: u32,
}

impl CostLimits {
    /// Admits Dovecot's defaults (ARGON2ID m=64 MiB t=3 p=1, ARGON2I 32 MiB
    /// t=4, BLF-CRYPT 5, SHA-crypt 5000 rounds) and common installs (PHP's
    /// argon2id m=64 MiB t=4, argon2-cffi's p=4, bcrypt 10 to 13, passlib's
    /// 656,000 SHA-crypt rounds). At 64 MiB per hash, the memory that
    /// hashing can take is 64 MiB times the hashing slots.
    pub const DEFAULT: CostLimits = CostLimits {
        argon2_max_memory_kib: 64 * 1024,
        argon2_max_time: 8,
        argon2_max_lanes: 8,
        bcrypt_max_cost: 14,
        sha_crypt_max_rounds: 1_000_000,
    };
}

impl Default for CostLimits {
    fn default() -> Self {
        CostLimits::DEFAULT
    }
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
    let (scheme, data) = parse(stored)?;
    verify_data(scheme, data, password)
}

/// The scheme a stored string is verified with: `CRYPT` resolved by its
/// `$id$`.
fn resolve(stored: &str) -> Result<(Scheme, &str), SchemeError> {
    let (scheme, data) = parse(stored)?;
    if scheme != Scheme::Crypt {
        return Ok((scheme, data));
    }
    let scheme = match crypt_id(data) {
        Some("2y" | "2b" | "2a") => Scheme::BlfCrypt,
        Some("6") => Scheme::Sha512Crypt,
        Some("5") => Scheme::Sha256Crypt,
        Some("argon2id") => Scheme::Argon2id,
        Some("argon2i") => Scheme::Argon2i,
        Some(id) => return Err(SchemeError::UnsupportedCrypt(format!("${id}$"))),
        None => {
            return Err(SchemeError::UnsupportedCrypt(
                "without a $id$ prefix".into(),
            ));
        }
    };
    Ok((scheme, data))
}

/// Checks a stored string's cost parameters against `limits`, without
/// hashing anything: [`SchemeError::AboveCap`] names the parameter and the
/// cap. Data whose parameters cannot be read is `Malformed`.
pub fn check_cost(stored: &str, limits: &CostLimits) -> Result<(), SchemeError> {
    let (scheme, data) = resolve(stored)?;
    let above = |found: String, key: &str, cap: String| SchemeError::AboveCap {
        scheme,
        found,
        cap: format!("{key} = {cap}"),
    };
    match scheme {
        Scheme::Plain | Scheme::Crypt => Ok(()),
        Scheme::Argon2id | Scheme::Argon2i => {
            let hash = argon2::PasswordHash::new(data).map_err(|e| malformed(scheme, e))?;
            let params = argon2::Params::try_from(&hash).map_err(|e| malformed(scheme, e))?;
            let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
            if m > limits.argon2_max_memory_kib {
                return Err(above(
                    format!("m={m} KiB"),
                    "argon2_max_memory",
                    format!("{} KiB", limits.argon2_max_memory_kib),
                ));
            }
            if t > limits.argon2_max_time {
                return Err(above(
                    format!("t={t}"),
                    "argon2_max_time",
                    limits.argon2_max_time.to_string(),
                ));
            }
            if p > limits.argon2_max_lanes {
                return Err(above(
                    format!("p={p}"),
                    "argon2_max_lanes",
                    limits.argon2_max_lanes.to_string(),
                ));
            }
            Ok(())
        }
        Scheme::BlfCrypt => {
            // `$2y$NN$...`: the cost is two decimal digits.
            let cost = data
                .get(4..7)
                .and_then(|c| c.strip_suffix('$'))
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u32>().ok())
                .ok_or_else(|| malformed(scheme, "no cost after $2y$"))?;
            if cost > limits.bcrypt_max_cost {
                return Err(above(
                    format!("cost {cost}"),
                    "bcrypt_max_cost",
                    limits.bcrypt_max_cost.to_string(),
                ));
            }
            Ok(())
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let rest = data
                .strip_prefix('$')
                .and_then(|d| d.split_once('$'))
                .map_or("", |(_, rest)| rest);
            let rounds = match rest.strip_prefix("rounds=") {
                None => 5000,
                Some(r) => {
                    let digits = r.split('$').next().unwrap_or_default();
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(malformed(scheme, "rounds= is not a number"));
                    }
                    digits.parse::<u64>().unwrap_or(u64::MAX)
                }
            };
            if rounds > u64::from(limits.sha_crypt_max_rounds) {
                let shown = if rounds == u64::MAX {
                    "rounds=(more than 20 digits)".to_owned()
                } else {
                    format!("rounds={rounds}")
                };
                return Err(above(
                    shown,
                    "sha_crypt_max_rounds",
                    limits.sha_crypt_max_rounds.to_string(),
                ));
            }
            Ok(())
        }
    }
}

fn verify_data(scheme: Scheme, data: &str, password: &[u8]) -> Result<bool, SchemeError> {
    match scheme {
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
        Scheme::Crypt => match crypt_id(data) {
            Some("2y" | "2b" | "2a") => verify_data(Scheme::BlfCrypt, data, password),
            Some("6") => verify_data(Scheme::Sha512Crypt, data, password),
            Some("5") => verify_data(Scheme::Sha256Crypt, data, password),
            Some("argon2id") => verify_data(Scheme::Argon2id, data, password),
            Some("argon2i") => verify_data(Scheme::Argon2i, data, password),
            Some(id) => Err(SchemeError::UnsupportedCrypt(format!("${id}$"))),
            None => Err(SchemeError::UnsupportedCrypt(
                "without a $id$ prefix".into(),
            )),
        },
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
/// `CRYPT` produces a `$2y$` bcrypt string, as `doveadm pw -s CRYPT` does.
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

/// What a stored string costs to verify, as a comparable key: the scheme
/// and its parameters without salt and hash (`ARGON2ID$argon2id$v=19$m=
/// 65536,t=3,p=1`, `BLF-CRYPT$10`, `SHA512-CRYPT$6`, `PLAIN`). Fails, without
/// hashing anything, for an unknown scheme or unsupported crypt `$id$`;
/// malformed data may still only show when verified.
pub fn cost_class(stored: &str) -> Result<String, SchemeError> {
    let (scheme, data) = resolve(stored)?;
    let params = match scheme {
        Scheme::Plain => Some(""),
        Scheme::BlfCrypt => data.get(3..6),
        _ => data.rsplitn(3, '$').nth(2),
    };
    let params = params.ok_or_else(|| malformed(scheme, "too short"))?;
    Ok(format!("{scheme}{params}"))
}

/// One stored string of the most common cost class among `stored` (on a
/// tie, the class seen first), skipping strings that cannot be checked or
/// are above `limits`: the dummy a directory checks for unknown users.
pub fn most_common_class<'a>(
    stored: impl IntoIterator<Item = &'a str>,
    limits: &CostLimits,
) -> Option<String> {
    // class -> (count, first index, that string)
    let mut classes: std::collections::HashMap<String, (usize, usize, &str)> =
        std::collections::HashMap::new();
    for (i, s) in stored.into_iter().enumerate() {
        if let Ok(class) = cost_class(s)
            && check_cost(s, limits).is_ok()
        {
            classes.entry(class).or_insert((0, i, s)).0 += 1;
        }
    }
    classes
        .into_values()
        .max_by_key(|&(count, first, _)| (count, std::cmp::Reverse(first)))
        .map(|(_, _, s)| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_common_class_is_the_dummy() {
        let sample = [
            "{PLAIN}x",
            "{SHA512-CRYPT}$6$a$b",
            "{BLF-CRYPT}$2y$04$5D.aL.fV85YiD13oXmGByuH.V3eCTJWidNypC2058qMqJQ3PXvYDu",
            "{SHA512-CRYPT}$6$c$d",
            "{MD5}unknown",
        ];
        let limits = CostLimits::DEFAULT;
        assert_eq!(
            most_common_class(sample, &limits).as_deref(),
            Some("{SHA512-CRYPT}$6$a$b")
        );
        assert_eq!(most_common_class([], &limits), None);
        let limits = CostLimits {
            sha_crypt_max_rounds: 4000,
            ..limits
        };
        assert_eq!(
            most_common_class(sample, &limits).as_deref(),
            Some("{PLAIN}x")
        );
    }

    #[test]
    fn cost_classes() {
        let c = |s| cost_class(s).unwrap();
        assert_eq!(
            c("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"),
            "ARGON2ID$argon2id$v=19$m=65536,t=3,p=1"
        );
        assert_eq!(
            c("$2b$04$2Llj07fKeSouZE8uewNLvOkQblSUiHEOE8u1OL7Lz5AtKAGwq034i"),
            "BLF-CRYPT$04"
        );
        assert_eq!(
            c("{BLF-CRYPT}$2y$04$5D.aL.fV85YiD13oXmGByuH.V3eCTJWidNypC2058qMqJQ3PXvYDu"),
            "BLF-CRYPT$04"
        );
        assert_eq!(c("{SHA512-CRYPT}$6$salt$hash"), "SHA512-CRYPT$6");
        assert_eq!(c("$6$rounds=1000$salt$hash"), "SHA512-CRYPT$6$rounds=1000");
        assert_eq!(c("{plain}x"), "PLAIN");
        let e = |s| cost_class(s).unwrap_err().to_string();
        assert_eq!(e("{MD5}x"), "unknown password scheme \"MD5\"");
        assert!(e("$1$salt$hash").contains("$1$"));
        assert!(e("secret").contains("without a $id$"));
        assert!(!e("{SHA512-CRYPT}x").contains('x'));
    }

    #[test]
    fn crypt_ids() {
        assert_eq!(crypt_id("$6$salt$hash"), Some("6"));
        assert_eq!(crypt_id("$argon2id$v=19$x"), Some("argon2id"));
        assert_eq!(crypt_id("$6$"), None);
        assert_eq!(crypt_id("secret"), None);
        assert_eq!(crypt_id("$a b$x"), None);
    }
}
