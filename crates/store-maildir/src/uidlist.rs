//! `dovecot-uidlist`: Dovecot's map from Maildir base names to IMAP UIDs.
//!
//! Version 3 (Dovecot 1.1 and later), which is what popgate writes:
//!
//! ```text
//! 3 V<uidvalidity> N<next uid> G<mailbox guid> [<key><value> ...]
//! <uid> [<key><value> ...] :<base name>
//! ```
//!
//! Record extension keys are `A`..=`Z`; Dovecot uses `S` (physical size),
//! `W` (virtual size, the POP3 size), `P` (a saved POP3 UIDL; empty means
//! the base name), `O` (POP3 order) and `G` (message GUID). Unknown keys and
//! header fields are kept as they are. Version 1 (`1 <uidvalidity>
//! <next uid>` and `<uid> <file name>`) is read and upgraded on write.
//!
//! A broken record line is skipped with a warning (Dovecot would throw the
//! whole file away and renumber the mailbox; popgate keeps what it can).

use std::collections::HashMap;

use tracing::warn;

pub const FILE_NAME: &str = "dovecot-uidlist";

/// One message's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub uid: u32,
    /// `(key, value)` in file order.
    pub ext: Vec<(u8, String)>,
    /// The file name base (the name before `:`).
    pub base: String,
}

impl Record {
    pub fn new(uid: u32, base: impl Into<String>) -> Self {
        Record {
            uid,
            ext: Vec::new(),
            base: base.into(),
        }
    }

    pub fn ext(&self, key: u8) -> Option<&str> {
        self.ext
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets an extension, replacing an old value in place or appending.
    pub fn set_ext(&mut self, key: u8, value: impl Into<String>) {
        let value = value.into();
        match self.ext.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.ext.push((key, value)),
        }
    }
}

/// A parsed uidlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uidlist {
    pub uid_validity: u32,
    pub next_uid: u32,
    /// The mailbox GUID (32 hex digits); generated on write when missing.
    pub guid: Option<String>,
    /// Other header fields, verbatim (`<key><value>`).
    pub header_extra: Vec<String>,
    /// Sorted by UID, one per base name.
    pub records: Vec<Record>,
}

impl Uidlist {
    /// An empty uidlist for a new mailbox.
    pub fn new(uid_validity: u32) -> Self {
        Uidlist {
            uid_validity: uid_validity.max(1),
            next_uid: 1,
            guid: None,
            header_extra: Vec::new(),
            records: Vec::new(),
        }
    }

    /// Parses a uidlist. `None` when the header is unusable (the caller
    /// then starts a new one, as Dovecot does). Only whole lines count: an
    /// unterminated last line may be an append still in progress.
    pub fn parse(data: &[u8], path: &str) -> Option<Uidlist> {
        let complete = match data.iter().rposition(|&b| b == b'\n') {
            Some(end) => &data[..end],
            None => return None,
        };
        let mut lines = complete.split(|&b| b == b'\n');
        let header = String::from_utf8_lossy(lines.next()?);
        let (version, mut list) = match parse_header(&header) {
            Ok(v) => v,
            Err(why) => {
                warn!(path, header = %header, "ignoring dovecot-uidlist: {why}");
                return None;
            }
        };
        let mut prev_uid = 0u32;
        for (n, raw) in lines.enumerate() {
            let line = String::from_utf8_lossy(raw);
            let line_no = n + 2;
            let record = match parse_record(&line, version) {
                Ok(r) => r,
                Err(why) => {
                    warn!(path, line_no, line = %line, "skipping dovecot-uidlist line: {why}");
                    continue;
                }
            };
            if record.uid <= prev_uid {
                warn!(
                    path,
                    line_no,
                    uid = record.uid,
                    "skipping dovecot-uidlist line: UIDs not ascending"
                );
                continue;
            }
            prev_uid = record.uid;
            list.records.push(record);
        }
        // The same file listed twice: the later UID wins, as in Dovecot.
        let mut dropped = vec![false; list.records.len()];
        let mut by_base: HashMap<&str, usize> = HashMap::with_capacity(list.records.len());
        for (i, r) in list.records.iter().enumerate() {
            if let Some(old) = by_base.insert(&r.base, i) {
                warn!(path, base = %r.base, "duplicate dovecot-uidlist entry");
                dropped[old] = true;
            }
        }
        drop(by_base);
        if dropped.contains(&true) {
            let mut dropped = dropped.into_iter();
            list.records.retain(|_| !dropped.next().unwrap_or(false));
        }
        if list.next_uid <= prev_uid {
            list.next_uid = prev_uid + 1;
        }
        Some(list)
    }

    /// The file's bytes, in version 3 format.
    pub fn serialize(&self) -> Vec<u8> {
        let guid = self.guid.clone().unwrap_or_else(new_guid);
        let mut out = format!("3 V{} N{} G{}", self.uid_validity, self.next_uid, guid);
        for field in &self.header_extra {
            out.push(' ');
            out.push_str(field);
        }
        out.push('\n');
        for r in &self.records {
            out.push_str(&r.uid.to_string());
            for (k, v) in &r.ext {
                out.push(' ');
                out.push(char::from(*k));
                out.push_str(v);
            }
            out.push_str(" :");
            out.push_str(&r.base);
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Base name → index into `records`.
    pub fn index(&self) -> HashMap<&str, usize> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.base.as_str(), i))
            .collect()
    }

    /// Gives `base` the next UID and returns it; `None` when the UID space
    /// is used up (the mailbox then needs a new UIDVALIDITY, by hand).
    pub fn add(&mut self, base: impl Into<String>) -> Option<u32> {
        let uid = self.next_uid;
        if uid == u32::MAX {
            return None;
        }
        self.records.push(Record::new(uid, base));
        self.next_uid += 1;
        Some(uid)
    }
}

fn parse_header(line: &str) -> Result<(u8, Uidlist), String> {
    let mut list = Uidlist::new(1);
    list.uid_validity = 0;
    list.next_uid = 0;
    let version = match line.as_bytes() {
        [v @ b'0'..=b'9', b' ', ..] => *v - b'0',
        _ => return Err("invalid version number".into()),
    };
    let rest = &line[2..];
    match version {
        1 => {
            let mut it = rest.split_ascii_whitespace().map(str::parse::<u32>);
            match (it.next(), it.next()) {
                (Some(Ok(v)), Some(Ok(n))) => (list.uid_validity, list.next_uid) = (v, n),
                _ => return Err("broken version 1 header".into()),
            }
        }
        3 => {
            for field in rest.split(' ').filter(|f| !f.is_empty()) {
                // The key is one byte; the field may start with any
                // character (bytes that were not UTF-8 are U+FFFD here), so
                // split only after an ASCII key, never inside a character.
                let (key, value) = match field.as_bytes()[0] {
                    k @ (b'V' | b'N' | b'G') => (k, &field[1..]),
                    _ => (0, field),
                };
                match key {
                    b'V' => list.uid_validity = value.parse().map_err(|_| "bad V")?,
                    b'N' => list.next_uid = value.parse().map_err(|_| "bad N")?,
                    b'G' if value.len() == 32 && value.bytes().all(|c| c.is_ascii_hexdigit()) => {
                        list.guid = Some(value.to_ascii_lowercase());
                    }
                    b'G' => return Err(format!("invalid mailbox GUID {value}")),
                    _ => list.header_extra.push(field.to_owned()),
                }
            }
        }
        v => return Err(format!("unsupported version {v}")),
    }
    if list.uid_validity == 0 || list.next_uid == 0 {
        return Err("UIDVALIDITY or next UID missing".into());
    }
    Ok((version, list))
}

fn parse_record(line: &str, version: u8) -> Result<Record, String> {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    let uid: u32 = line[..digits].parse().map_err(|_| "invalid UID")?;
    if uid == 0 || uid == u32::MAX || line.as_bytes().get(digits) != Some(&b' ') {
        return Err("invalid UID".into());
    }
    let mut rest = line[digits..].trim_start_matches(' ');
    let mut record = Record::new(uid, "");
    if version == 3 {
        while !rest.is_empty() && !rest.starts_with(':') {
            let end = rest.find(' ').unwrap_or(rest.len());
            let field = &rest[..end];
            match field.as_bytes()[0] {
                k @ b'A'..=b'Z' => record.ext.push((k, field[1..].to_owned())),
                _ => return Err(format!("invalid extension field {field:?}")),
            }
            rest = rest[end..].trim_start_matches(' ');
        }
        rest = rest.strip_prefix(':').ok_or("no file name")?;
    }
    let base = crate::filename::base(rest);
    if base.is_empty() || base.contains('/') {
        return Err("invalid file name".into());
    }
    record.base = base.to_owned();
    Ok(record)
}

/// A new mailbox GUID: 128 random bits as 32 lowercase hex digits.
pub fn new_guid() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Not worth failing a delivery over; time and pid still separate mailboxes.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes[..8].copy_from_slice(&t.as_nanos().to_le_bytes()[..8]);
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_round_trip() {
        let text = "3 V1234 N10 G0123456789abcdef0123456789abcdef Xfuture\n\
                    1 :1000000001.M1P1.h\n\
                    2 P W23 :1000000002.M1P1.h\n\
                    3 Pcustom-uidl-3 W999 :1000000003.M1P1.h,S=10,W=12\n\
                    7 O1 W23 :1000000005.M1P1.h\n";
        let list = Uidlist::parse(text.as_bytes(), "t").unwrap();
        assert_eq!(list.uid_validity, 1234);
        assert_eq!(list.next_uid, 10);
        assert_eq!(
            list.guid.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(list.header_extra, ["Xfuture"]);
        assert_eq!(list.records.len(), 4);
        assert_eq!(list.records[1].ext(b'P'), Some(""));
        assert_eq!(list.records[1].ext(b'W'), Some("23"));
        assert_eq!(list.records[2].ext(b'P'), Some("custom-uidl-3"));
        assert_eq!(list.records[2].base, "1000000003.M1P1.h,S=10,W=12");
        assert_eq!(list.records[3].ext(b'O'), Some("1"));
        assert_eq!(String::from_utf8(list.serialize()).unwrap(), text);
    }

    #[test]
    fn reads_what_dovecot_wrote() {
        // Written by Dovecot 2.3.19 (pop3 and dovecot-lda) on this machine.
        let text = "3 V1795714592 N3 Gdfda3906206e086b6f2c000083ecc375\n\
                    1 W32 :1700000000.M1P1.host\n\
                    2 :1795714686.M118395P12561.vm,S=36,W=41\n";
        let list = Uidlist::parse(text.as_bytes(), "t").unwrap();
        assert_eq!(list.uid_validity, 1_795_714_592);
        assert_eq!(list.next_uid, 3);
        assert_eq!(list.records[0].ext(b'W'), Some("32"));
        assert_eq!(
            list.records[1].base,
            "1795714686.M118395P12561.vm,S=36,W=41"
        );
        assert!(list.records[1].ext.is_empty());
    }

    #[test]
    fn version_1_is_read_and_upgraded() {
        let list = Uidlist::parse(b"1 77 5\n1 a:2,S\n3 b\n", "t").unwrap();
        assert_eq!((list.uid_validity, list.next_uid), (77, 5));
        assert_eq!(list.records[0].base, "a");
        let out = String::from_utf8(list.serialize()).unwrap();
        assert!(out.starts_with("3 V77 N5 G"), "{out}");
        assert!(out.ends_with("\n1 :a\n3 :b\n"), "{out}");
    }

    #[test]
    fn broken_lines_are_skipped_and_partial_lines_ignored() {
        let text = "3 V9 N2 G0123456789abcdef0123456789abcdef\n\
                    1 :a\n\
                    x :bad\n\
                    1 :not-ascending\n\
                    4 w1 :lowercase-key\n\
                    5 W1 nocolon\n\
                    6 :dir/name\n\
                    8 :b\n\
                    9 :partial";
        let list = Uidlist::parse(text.as_bytes(), "t").unwrap();
        let bases: Vec<_> = list.records.iter().map(|r| r.base.as_str()).collect();
        assert_eq!(bases, ["a", "b"]);
        assert_eq!(list.next_uid, 9, "next UID is above every UID seen");
    }

    #[test]
    fn broken_headers_mean_no_uidlist() {
        assert!(Uidlist::parse(b"", "t").is_none());
        assert!(Uidlist::parse(b"3 V1 N2", "t").is_none());
        assert!(Uidlist::parse(b"x\n", "t").is_none());
        assert!(Uidlist::parse(b"3 N2 G0123456789abcdef0123456789abcdef\n", "t").is_none());
        assert!(Uidlist::parse(b"2 1 2\n", "t").is_none());
    }

    #[test]
    fn duplicate_base_keeps_the_later_uid() {
        let list = Uidlist::parse(b"3 V9 N2\n1 :a\n2 :b\n3 :a\n", "t").unwrap();
        let got: Vec<_> = list
            .records
            .iter()
            .map(|r| (r.uid, r.base.as_str()))
            .collect();
        assert_eq!(got, [(2, "b"), (3, "a")]);
        assert_eq!(list.next_uid, 4);
    }

    #[test]
    fn new_records_take_next_uid() {
        let mut list = Uidlist::new(5);
        assert_eq!(list.add("x"), Some(1));
        assert_eq!(list.add("y"), Some(2));
        list.next_uid = u32::MAX;
        assert_eq!(list.add("z"), None);
        list.records[0].set_ext(b'W', "10");
        list.records[0].set_ext(b'W', "11");
        assert_eq!(list.records[0].ext, [(b'W', "11".to_owned())]);
        let guid = new_guid();
        assert_eq!(guid.len(), 32);
        assert_ne!(guid, new_guid());
    }

    /// A byte that is not ASCII in a header field (here the first byte of
    /// a field) used to panic (`split_at(1)` inside U+FFFD), which made the
    /// mailbox unopenable.
    #[test]
    fn non_ascii_header_fields_are_kept_not_a_panic() {
        let list = Uidlist::parse(b"3 V5 N2 \xe9x \xc3\xa9t\n1 :a\n", "t").unwrap();
        assert_eq!(list.uid_validity, 5);
        assert_eq!(list.header_extra, ["\u{fffd}x", "\u{e9}t"]);
        assert_eq!(list.records[0].base, "a");
        assert!(Uidlist::parse(b"\xff 1 2\n", "t").is_none());
        assert!(Uidlist::parse(b"3 \xe9\n", "t").is_none());
        let list = Uidlist::parse(b"3 V5 N2\n1 \xe9 :a\n2 W\xe9 :b\n3 :\xe9\n", "t").unwrap();
        let bases: Vec<_> = list.records.iter().map(|r| r.base.as_str()).collect();
        assert_eq!(bases, ["b", "\u{fffd}"]);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Valid uidlists of both versions, as bytes.
    fn valid_uidlist() -> impl Strategy<Value = Vec<u8>> {
        let record = (
            1u32..1000,
            proptest::collection::vec((b'A'..=b'Z', "[!-~]{0,8}"), 0..3),
            "[!-9;-~]{1,24}",
            proptest::option::of("[!-~]{0,6}"),
        );
        (
            any::<bool>(),
            1u32..u32::MAX,
            proptest::collection::vec(record, 0..8),
        )
            .prop_map(|(v1, validity, records)| {
                let mut out = if v1 {
                    format!("1 {validity} 5\n")
                } else {
                    format!("3 V{validity} N5 G0123456789abcdef0123456789abcdef Xx\n")
                };
                let mut uid = 0;
                for (step, ext, base, info) in records {
                    uid += step;
                    out.push_str(&uid.to_string());
                    if !v1 {
                        for (k, v) in ext {
                            out.push(' ');
                            out.push(char::from(k));
                            out.push_str(&v.replace(' ', ""));
                        }
                        out.push_str(" :");
                    } else {
                        out.push(' ');
                    }
                    out.push_str(&base);
                    if let Some(info) = info {
                        out.push_str(":2,");
                        out.push_str(&info);
                    }
                    out.push('\n');
                }
                out.into_bytes()
            })
    }

    /// A valid uidlist with some bytes replaced, inserted or removed.
    fn mutated_uidlist() -> impl Strategy<Value = Vec<u8>> {
        (
            valid_uidlist(),
            proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
        )
            .prop_map(|(mut data, edits)| {
                for (at, byte, op) in edits {
                    let at = at % (data.len() + 1);
                    match op {
                        0 if at < data.len() => data[at] = byte,
                        1 => data.insert(at, byte),
                        _ if at < data.len() => {
                            data.remove(at);
                        }
                        _ => data.push(byte),
                    }
                }
                data
            })
    }

    /// What survives a parse survives a write and a second parse.
    fn reparses_the_same(list: &Uidlist) -> Result<(), TestCaseError> {
        let mut list = list.clone();
        list.guid.get_or_insert_with(new_guid);
        let again = Uidlist::parse(&list.serialize(), "t");
        prop_assert_eq!(again.as_ref(), Some(&list));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Some(list) = Uidlist::parse(&data, "t") {
                reparses_the_same(&list)?;
            }
        }

        #[test]
        fn parse_never_panics_on_text_like_bytes(data in "[0-9 VNGWPO:a-z\n\u{e9}\u{fffd}]{0,200}") {
            if let Some(list) = Uidlist::parse(data.as_bytes(), "t") {
                reparses_the_same(&list)?;
            }
        }

        #[test]
        fn valid_uidlists_parse(data in valid_uidlist()) {
            let list = Uidlist::parse(&data, "t");
            prop_assert!(list.is_some(), "{}", String::from_utf8_lossy(&data));
            reparses_the_same(&list.unwrap())?;
        }

        #[test]
        fn parse_never_panics_on_mutated_uidlists(data in mutated_uidlist()) {
            if let Some(list) = Uidlist::parse(&data, "t") {
                reparses_the_same(&list)?;
            }
        }
    }
}
