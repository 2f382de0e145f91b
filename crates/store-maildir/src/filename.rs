//! Maildir file names, read and made the way Dovecot does.
//!
//! A name is `<base>[:2,<flags>]`. The base (everything before the first
//! `:`) never changes while the message lives: flag changes rename only the
//! part after `:`, and a move from new/ to cur/ appends `:2,`. So the base
//! is the message's identity; `dovecot-uidlist` records it, and popgate uses
//! it as the message key.
//!
//! The base may carry sizes as `,S=<physical>` and `,W=<virtual>`, where the
//! virtual size counts every line ending as CRLF: exactly the POP3 size.

use std::cmp::Ordering;
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Separates the base from the info part (`:2,<flags>`).
const INFO_SEP: u8 = b':';

/// The base of a Maildir file name: everything before the first `:`.
pub fn base(name: &str) -> &str {
    match name.find(INFO_SEP as char) {
        Some(i) => &name[..i],
        None => name,
    }
}

/// A size carried in the name as `,<kind>=<digits>`, as Dovecot reads it:
/// the first `,S=` / `,W=`, whose digits must end the name or be followed
/// by `:` or `,`.
pub fn size_from_name(name: &str, kind: u8) -> Option<u64> {
    let b = name.as_bytes();
    let start = b
        .windows(3)
        .position(|w| w[0] == b',' && w[1] == kind && w[2] == b'=')?
        + 3;
    let digits = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    match b.get(start + digits) {
        None | Some(b':') | Some(b',') => {}
        Some(_) => return None,
    }
    // Dovecot accepts an empty digit string as 0; so do we, for identical sizes.
    let mut size: u64 = 0;
    for &c in &b[start..start + digits] {
        size = size.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(size)
}

/// The POP3 (virtual) size from `,W=`, if the name carries it.
pub fn virtual_size(name: &str) -> Option<u64> {
    size_from_name(name, b'W')
}

/// The name a message gets when moved from new/ to cur/: `:2,` appended
/// unless the name already has an info part.
pub fn cur_name(new_name: &str) -> String {
    if new_name.as_bytes().contains(&INFO_SEP) {
        new_name.to_owned()
    } else {
        format!("{new_name}:2,")
    }
}

/// Dovecot's order for messages that get their UIDs in the same sync:
/// by the leading seconds, then by the `M<usecs>` of the unique part when
/// both names have one, then by the rest of the base name.
pub fn sort_cmp(a: &str, b: &str) -> Ordering {
    let (secs_a, rest_a) = leading_number(a);
    let (secs_b, rest_b) = leading_number(b);
    secs_a
        .cmp(&secs_b)
        .then_with(|| match (usecs(rest_a), usecs(rest_b)) {
            (Some(ua), Some(ub)) => ua.cmp(&ub),
            _ => Ordering::Equal,
        })
        .then_with(|| base_cmp(rest_a, rest_b))
}

fn leading_number(s: &str) -> (u64, &str) {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n = s[..digits].bytes().fold(0u64, |n, c| {
        n.wrapping_mul(10).wrapping_add(u64::from(c - b'0'))
    });
    (n, &s[digits..])
}

/// The microseconds of `.<unique>.<host>` (the first `M<digits>` in
/// `<unique>`), as Dovecot finds them.
fn usecs(rest: &str) -> Option<u64> {
    let unique = rest.strip_prefix('.')?;
    let unique = &unique[..unique.find(['.', ':']).unwrap_or(unique.len())];
    let at = unique.find('M')?;
    Some(leading_number(&unique[at + 1..]).0)
}

/// Compares two names up to their info part, byte by byte; a name that ends
/// first compares by the byte that ends it (`:` or nothing), as in C.
fn base_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    loop {
        let ca = a.get(i).copied().unwrap_or(0);
        let cb = b.get(i).copied().unwrap_or(0);
        let a_end = ca == 0 || ca == INFO_SEP;
        let b_end = cb == 0 || cb == INFO_SEP;
        if a_end && b_end {
            return Ordering::Equal;
        }
        if ca != cb {
            return ca.cmp(&cb);
        }
        i += 1;
    }
}

/// This host's name, with `/` and `:` escaped as Dovecot does in file names.
pub fn hostname_for_filename() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut out = String::new();
        for c in hostname().chars() {
            match c {
                '/' => out.push_str("\\057"),
                ':' => out.push_str("\\072"),
                c => out.push(c),
            }
        }
        out
    })
}

/// This host's name as written into dotlock files (`<pid>:<host>`).
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

/// A new unique base name: `<secs>.M<usecs>P<pid>Q<n>.<host>`.
///
/// Time never goes backwards within the process (a repeat takes the next
/// microsecond, as Dovecot does), and the `Q` counter separates deliveries
/// within one microsecond. The caller still creates the file with O_EXCL.
pub fn generate_base() -> String {
    static LAST: Mutex<(u64, u64)> = Mutex::new((0, 0));
    static COUNTER: AtomicU32 = AtomicU32::new(0);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, usecs) = {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = (now.as_secs(), u64::from(now.subsec_micros()));
        if t <= *last {
            t = (last.0, last.1 + 1);
            if t.1 == 1_000_000 {
                t = (t.0 + 1, 0);
            }
        }
        *last = t;
        t
    };
    let q = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    format!(
        "{secs}.M{usecs}P{}Q{q}.{}",
        std::process::id(),
        hostname_for_filename()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_the_name_before_the_info() {
        assert_eq!(base("123.M4P5.h,S=10,W=12:2,RS"), "123.M4P5.h,S=10,W=12");
        assert_eq!(base("123.M4P5.h"), "123.M4P5.h");
        assert_eq!(cur_name("123.h"), "123.h:2,");
        assert_eq!(cur_name("123.h:2,S"), "123.h:2,S");
    }

    #[test]
    fn sizes_from_names() {
        let n = "1795714686.M118395P12561.vm,S=36,W=41:2,S";
        assert_eq!(size_from_name(n, b'S'), Some(36));
        assert_eq!(virtual_size(n), Some(41));
        assert_eq!(virtual_size("1.M1P1.vm,S=36,W=41"), Some(41));
        assert_eq!(virtual_size("1.M1P1.vm,S=36"), None);
        assert_eq!(virtual_size("1.M1P1.vm,W=4x"), None);
        assert_eq!(virtual_size("1.M1P1.vm,W=4,X=1"), Some(4));
        assert_eq!(size_from_name("1.h,S=", b'S'), Some(0));
    }

    #[test]
    fn dovecot_sort_order() {
        // The order Dovecot 2.3 gave these names in one sync (checked by hand).
        let mut names = vec![
            "1500000003.M1P1.h,S=17",
            "1500000002.M40P1.h:2,",
            "abc",
            "1500000002.M5P1.h",
            "1500000001.zzz:2,S",
        ];
        names.sort_by(|a, b| sort_cmp(a, b));
        assert_eq!(
            names,
            [
                "abc",
                "1500000001.zzz:2,S",
                "1500000002.M5P1.h",
                "1500000002.M40P1.h:2,",
                "1500000003.M1P1.h,S=17"
            ]
        );
    }

    #[test]
    fn generated_names_are_unique_and_ordered() {
        let a = generate_base();
        let b = generate_base();
        assert_ne!(a, b);
        assert_eq!(sort_cmp(&a, &b), Ordering::Less);
        assert!(!a.contains(':') && !a.contains('/'));
        assert!(a.contains(&format!("P{}Q", std::process::id())));
    }
}
