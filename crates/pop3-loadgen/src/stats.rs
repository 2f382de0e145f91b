//! Per-worker samples, merged into one report (text or one JSON line).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::client::{Error, ErrorKind};

/// Error details kept for the report, per run.
const KEEP_DETAILS: usize = 5;

/// What one worker measured.
#[derive(Default)]
pub struct Sample {
    pub sessions_ok: u64,
    pub sessions_failed: u64,
    pub messages: u64,
    /// Message octets after dot-unstuffing (what LIST promises).
    pub message_octets: u64,
    /// Octets of RETR bodies as sent (dot-stuffed, terminator included).
    pub wire_octets: u64,
    /// Messages whose size was checked against LIST.
    pub verified: u64,
    /// Connect to PASS reply, microseconds.
    pub login_us: Vec<u32>,
    /// RETR command to the terminating line, microseconds.
    pub retr_us: Vec<u32>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub details: Vec<String>,
}

impl Sample {
    pub fn error(&mut self, e: Error) {
        *self.errors.entry(e.kind).or_default() += 1;
        if self.details.len() < KEEP_DETAILS {
            self.details
                .push(format!("{}: {}", e.kind.as_str(), e.detail));
        }
    }

    pub fn merge(&mut self, other: Sample) {
        self.sessions_ok += other.sessions_ok;
        self.sessions_failed += other.sessions_failed;
        self.messages += other.messages;
        self.message_octets += other.message_octets;
        self.wire_octets += other.wire_octets;
        self.verified += other.verified;
        self.login_us.extend(other.login_us);
        self.retr_us.extend(other.retr_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for d in other.details {
            if self.details.len() < KEEP_DETAILS {
                self.details.push(d);
            }
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The p-th percentile (0 < p <= 1) of sorted values, in milliseconds.
fn percentile_ms(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64 / 1000.0)
}

pub struct Report {
    pub mode: &'static str,
    pub concurrency: usize,
    pub elapsed: Duration,
    pub sample: Sample,
    /// Idle mode: sessions that were logged in at once.
    pub held: Option<u64>,
}

struct Figures {
    secs: f64,
    sessions_per_s: f64,
    messages_per_s: f64,
    mb_per_s: f64,
    login: [Option<f64>; 3],
    retr: [Option<f64>; 3],
}

impl Report {
    fn figures(&mut self) -> Figures {
        let s = &mut self.sample;
        s.login_us.sort_unstable();
        s.retr_us.sort_unstable();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let pct = |v: &[u32]| {
            [
                percentile_ms(v, 0.5),
                percentile_ms(v, 0.99),
                v.last().map(|&m| m as f64 / 1000.0),
            ]
        };
        Figures {
            secs,
            sessions_per_s: s.sessions_ok as f64 / secs,
            messages_per_s: s.messages as f64 / secs,
            mb_per_s: s.message_octets as f64 / 1e6 / secs,
            login: pct(&s.login_us),
            retr: pct(&s.retr_us),
        }
    }

    pub fn text(&mut self) -> String {
        let f = self.figures();
        let s = &self.sample;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mode {} concurrency {} elapsed {:.2} s",
            self.mode, self.concurrency, f.secs
        );
        if let Some(h) = self.held {
            let _ = writeln!(out, "sessions held open at once: {h}");
        }
        let _ = writeln!(
            out,
            "sessions: {} ok, {} failed ({:.1}/s)",
            s.sessions_ok, s.sessions_failed, f.sessions_per_s
        );
        let _ = writeln!(
            out,
            "messages: {} ({:.1}/s), {:.2} MB of message data ({:.2} MB/s), {} verified against LIST",
            s.messages,
            f.messages_per_s,
            s.message_octets as f64 / 1e6,
            f.mb_per_s,
            s.verified
        );
        let _ = writeln!(
            out,
            "login latency: p50 {} p99 {} max {}",
            ms(f.login[0]),
            ms(f.login[1]),
            ms(f.login[2])
        );
        let _ = writeln!(
            out,
            "RETR latency:  p50 {} p99 {} max {}",
            ms(f.retr[0]),
            ms(f.retr[1]),
            ms(f.retr[2])
        );
        let _ = writeln!(out, "errors: {}", s.error_count());
        for (k, v) in &s.errors {
            let _ = writeln!(out, "  {}: {v}", k.as_str());
        }
        for d in &s.details {
            let _ = writeln!(out, "  e.g. {d}");
        }
        out
    }

    pub fn json(&mut self) -> String {
        let f = self.figures();
        let s = &self.sample;
        let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
        let mut out = String::from("{");
        let _ = write!(
            out,
            "\"mode\":\"{}\",\"concurrency\":{},\"elapsed_s\":{:.3},",
            self.mode, self.concurrency, f.secs
        );
        if let Some(h) = self.held {
            let _ = write!(out, "\"held\":{h},");
        }
        let _ = write!(
            out,
            "\"sessions_ok\":{},\"sessions_failed\":{},\"sessions_per_s\":{:.3},\"messages\":{},\"messages_per_s\":{:.3},\
             \"message_octets\":{},\"wire_octets\":{},\"mb_per_s\":{:.3},\"verified\":{},",
            s.sessions_ok,
            s.sessions_failed,
            f.sessions_per_s,
            s.messages,
            f.messages_per_s,
            s.message_octets,
            s.wire_octets,
            f.mb_per_s,
            s.verified
        );
        let _ = write!(
            out,
            "\"login_p50_ms\":{},\"login_p99_ms\":{},\"login_max_ms\":{},\"retr_p50_ms\":{},\"retr_p99_ms\":{},\"retr_max_ms\":{},",
            num(f.login[0]),
            num(f.login[1]),
            num(f.login[2]),
            num(f.retr[0]),
            num(f.retr[1]),
            num(f.retr[2])
        );
        let retr_total_us: u64 = s.retr_us.iter().map(|&u| u as u64).sum();
        let retr_mb_per_s = if retr_total_us > 0 {
            s.message_octets as f64 / retr_total_us as f64
        } else {
            0.0
        };
        let _ = write!(out, "\"retr_mb_per_s\":{retr_mb_per_s:.3},");
        let _ = write!(out, "\"errors\":{},\"error_kinds\":{{", s.error_count());
        for (i, (k, v)) in s.errors.iter().enumerate() {
            let _ = write!(
                out,
                "{}\"{}\":{v}",
                if i > 0 { "," } else { "" },
                k.as_str()
            );
        }
        out.push_str("},\"error_details\":[");
        for (i, d) in s.details.iter().enumerate() {
            let _ = write!(out, "{}\"{}\"", if i > 0 { "," } else { "" }, escape(d));
        }
        out.push_str("]}");
        out
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&[7000], 0.99), Some(7.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }

    #[test]
    fn json_escapes() {
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
    }
}
