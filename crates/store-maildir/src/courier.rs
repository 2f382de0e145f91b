//! Courier's POP3 UIDLs, for a Maildir that Courier served: its
//! `courierpop3dsizelist` lists the messages in POP3 order with the UIDL
//! each was given, in one of four versions (as Dovecot's
//! `courier-dovecot-migrate.pl` reads it):
//!
//! ```text
//! /2 <next uid> <uidvalidity>      (or /3 ..., /1 <next uid>, or no header: version 0)
//! <file name> <size> <uid>:<uidvalidity>[:<n>]    versions 2 and 3
//! <file name> <size> <uid>                        version 1
//! <file name> <size>                              version 0
//! ```
//!
//! The UIDL is `UID<uid>-<uidvalidity>`, `UID<uid>` when the UID validity
//! is 0, and the file name's base (bytes outside `!`..`~`, `'`, `"` and `+`
//! written `+XX`) when the UID is 0. Messages the list does not name (mail
//! that came after Courier's last session) keep the store's own UIDLs and
//! come after the listed ones. `courierimapuiddb` holds IMAP UIDs only,
//! which POP3 never shows; it is not needed for the UIDLs.

use tracing::warn;

pub const FILE_NAME: &str = "courierpop3dsizelist";
/// The largest list read (about 100 bytes a message).
pub const MAX: u64 = 64 * 1024 * 1024;

/// One listed message: its file name base and the UIDL Courier gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub base: String,
    pub uidl: String,
}

/// Parses a `courierpop3dsizelist`, in POP3 order. Broken lines are
/// skipped with a warning; `None` for a header of an unknown version.
pub fn parse(data: &[u8], path: &str) -> Option<Vec<Listed>> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines().peekable();
    if let Some(rest) = lines.peek().and_then(|first| first.strip_prefix('/')) {
        let version = rest.split(' ').next().unwrap_or("");
        if !matches!(version, "1" | "2" | "3") {
            warn!(
                path,
                version, "ignoring courierpop3dsizelist: unknown version"
            );
            return None;
        }
        lines.next();
    }
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        match parse_line(line) {
            Some(l) => out.push(l),
            None if line.is_empty() => {}
            None => warn!(
                path,
                line_no = n + 2,
                line,
                "skipping courierpop3dsizelist line"
            ),
        }
    }
    Some(out)
}

fn parse_line(line: &str) -> Option<Listed> {
    let mut fields = line.split(' ');
    let name = fields.next().filter(|n| !n.is_empty())?;
    let _size: u64 = fields.next()?.parse().ok()?;
    let (uid, uidv) = match fields.next() {
        None => (0u64, 0u64),
        Some(ids) => {
            let mut parts = ids.split(':');
            let uid = parts.next()?.parse().ok()?;
            let uidv = match parts.next() {
                Some(v) => v.parse().ok()?,
                None => 0,
            };
            (uid, uidv)
        }
    };
    if fields.next().is_some() {
        return None;
    }
    let base = crate::filename::base(name);
    if base.is_empty() || base.contains('/') {
        return None;
    }
    let uidl = match (uid, uidv) {
        (0, _) => escaped(base),
        (uid, 0) => format!("UID{uid}"),
        (uid, uidv) => format!("UID{uid}-{uidv}"),
    };
    Some(Listed {
        base: base.to_owned(),
        uidl,
    })
}

/// A file name as a version 0 UIDL.
fn escaped(base: &str) -> String {
    let mut out = String::with_capacity(base.len());
    for b in base.bytes() {
        if !(0x21..=0x7e).contains(&b) || matches!(b, b'\'' | b'"' | b'+') {
            out.push_str(&format!("+{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uidls(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes(), "t")
            .unwrap()
            .into_iter()
            .map(|l| (l.base, l.uidl))
            .collect()
    }

    #[test]
    fn every_version() {
        let v2 = "/2 5 1188888888\n\
                  1188000001.M1P2.host:2,S 120 3:1188888888\n\
                  1188000002.M1P2.host 99 4:1188888888\n";
        assert_eq!(
            uidls(v2),
            [
                ("1188000001.M1P2.host".into(), "UID3-1188888888".into()),
                ("1188000002.M1P2.host".into(), "UID4-1188888888".into())
            ]
        );
        let v3 = "/3 8 77\na:2,S 1 7:77:0\n";
        assert_eq!(uidls(v3), [("a".into(), "UID7-77".into())]);
        let v1 = "/1 9\nb 10 8\n";
        assert_eq!(uidls(v1), [("b".into(), "UID8".into())]);
        let v0 = "c+d'e 10\nf 3 0\n";
        assert_eq!(
            uidls(v0),
            [
                ("c+d'e".into(), "c+2Bd+27e".into()),
                ("f".into(), "f".into())
            ]
        );
    }

    #[test]
    fn broken_lines_are_skipped_and_unknown_versions_refused() {
        assert_eq!(
            uidls("/2 5 1\nx\nok 1 2:1\ny z\n"),
            [("ok".into(), "UID2-1".into())]
        );
        assert!(parse(b"/9 1 1\n", "t").is_none());
        assert!(parse(b"", "t").unwrap().is_empty());
    }
}
