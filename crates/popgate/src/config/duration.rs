//! The duration and byte-size values of the configuration: `30s`, `10m`,
//! `64MiB`. Arithmetic is checked: a value too large is an error naming it.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Reads `30s`, `10m`, `2h`, `1d`, `500ms`, or a plain number of seconds.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 30s, 10m, 1h, 500ms)"))?;
    let scale: u64 = match unit.trim() {
        "ms" => {
            return Ok(Duration::from_millis(n));
        }
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

/// Reads `64MiB`, `512KiB`, `1GiB` (also `K`, `M`, `G`, `KB`, `MB`, `GB`,
/// all binary) or `65536B` into bytes. A bare number is refused: argon2's
/// `m` is in KiB and a setting in bytes would be easy to misread.
pub(crate) fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Number(n) => {
            return Err(serde::de::Error::custom(format!(
                "{n} has no unit: write it like \"64MiB\" or \"65536KiB\""
            )));
        }
        Raw::Text(t) => t,
    };
    parse_byte_size(&text).map_err(serde::de::Error::custom)
}

pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size (like 64MiB, 65536KiB, 1GiB)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}
