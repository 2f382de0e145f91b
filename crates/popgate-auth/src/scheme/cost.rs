//! What a stored hash costs to verify: the caps ([`CostLimits`]), the
//! check against them without hashing ([`check_cost`]), and the cost
//! classes a directory picks its dummy hash by ([`cost_class`],
//! [`most_common_class`]).

use super::{Scheme, SchemeError, malformed, resolve};

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
        // Fixed, cheap cost (MD5-crypt is 1000 MD5s).
        Scheme::Plain
        | Scheme::Crypt
        | Scheme::Md5Crypt
        | Scheme::Md5
        | Scheme::PlainMd5
        | Scheme::LdapMd5
        | Scheme::Smd5
        | Scheme::Sha
        | Scheme::Ssha
        | Scheme::Sha256
        | Scheme::Ssha256
        | Scheme::Sha512
        | Scheme::Ssha512 => Ok(()),
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

/// What a stored string costs to verify, as a comparable key: the scheme
/// and its parameters without salt and hash (`ARGON2ID$argon2id$v=19$m=
/// 65536,t=3,p=1`, `BLF-CRYPT$10`, `SHA512-CRYPT$6`, `PLAIN`). Fails, without
/// hashing anything, for an unknown scheme or unsupported crypt `$id$`;
/// malformed data may still only show when verified.
pub fn cost_class(stored: &str) -> Result<String, SchemeError> {
    let (scheme, data) = resolve(stored)?;
    let params = match scheme {
        Scheme::BlfCrypt => data.get(3..6),
        Scheme::Argon2id | Scheme::Argon2i | Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            data.rsplitn(3, '$').nth(2)
        }
        // Fixed cost: one class per scheme.
        _ => Some(""),
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
            "{NTLM}unknown",
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
        assert_eq!(e("{NTLM}x"), "unknown password scheme \"NTLM\"");
        assert!(e("$3$salt$hash").contains("$3$"));
        assert!(e("secret").contains("without a $id$"));
        assert!(!e("{SHA512-CRYPT}x").contains('x'));
    }
}
