//! The size index: one object per mailbox (`<prefix>.popgate/sizes.json`)
//! that remembers the POP3 size of every message whose size had to be
//! computed or read, keyed by the object key and its version (ETag, or
//! size and modification time where a server lists no ETag). Shared by
//! every replica and kept across restarts, so a login reads one small
//! object instead of every message; an entry whose object changed or went
//! away is simply not used and dropped on the next write. An imported
//! message's carried UIDL (object metadata `x-amz-meta-pop3-uidl`) is kept
//! beside its size, so a login needs no HEAD per message for it either.
//! Version 2 added the UIDL: a version 1 index (which may lack one) is
//! rebuilt once.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeIndex {
    version: u32,
    /// Relative key -> its version and POP3 size.
    sizes: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    #[serde(rename = "v")]
    version: String,
    #[serde(rename = "s")]
    size: u64,
    /// The carried UIDL, for an imported message.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    uidl: Option<String>,
}

impl SizeIndex {
    pub fn new() -> Self {
        SizeIndex {
            version: FORMAT_VERSION,
            sizes: BTreeMap::new(),
        }
    }

    /// Parses a stored index; `None` for one that is broken or of another format.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let index: SizeIndex = serde_json::from_slice(bytes).ok()?;
        (index.version == FORMAT_VERSION).then_some(index)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an index always serialises")
    }

    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    /// The size (and carried UIDL) cached for this key at this version.
    pub fn get(&self, rel: &str, version: &str) -> Option<(u64, Option<&str>)> {
        self.sizes
            .get(rel)
            .filter(|e| e.version == version)
            .map(|e| (e.size, e.uidl.as_deref()))
    }

    /// Records a size and carried UIDL; true if that changed the index.
    pub fn insert(&mut self, rel: &str, version: &str, size: u64, uidl: Option<&str>) -> bool {
        let entry = Entry {
            version: version.to_owned(),
            size,
            uidl: uidl.map(str::to_owned),
        };
        self.sizes.insert(rel.to_owned(), entry.clone()) != Some(entry)
    }

    /// Drops the entries of keys not in `live`; true if any was dropped.
    pub fn retain(&mut self, live: &HashSet<&str>) -> bool {
        let before = self.sizes.len();
        self.sizes.retain(|k, _| live.contains(k.as_str()));
        self.sizes.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_versions() {
        let mut i = SizeIndex::new();
        assert!(i.insert("a", "\"etag1\"", 10, None));
        assert!(
            !i.insert("a", "\"etag1\"", 10, None),
            "same entry: no change"
        );
        assert!(i.insert("odd key\n", "s5-t1", 7, Some("carried-1")));
        let back = SizeIndex::parse(&i.to_bytes()).unwrap();
        assert_eq!(back, i);
        assert_eq!(back.get("a", "\"etag1\""), Some((10, None)));
        assert_eq!(
            back.get("a", "\"etag2\""),
            None,
            "another version is not trusted"
        );
        assert_eq!(back.get("odd key\n", "s5-t1"), Some((7, Some("carried-1"))));
    }

    #[test]
    fn retain_prunes_gone_keys() {
        let mut i = SizeIndex::new();
        i.insert("a", "1", 1, None);
        i.insert("b", "1", 2, None);
        assert!(i.retain(&HashSet::from(["a"])));
        assert!(!i.retain(&HashSet::from(["a"])));
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn broken_or_foreign_indexes_are_ignored() {
        assert!(SizeIndex::parse(b"not json").is_none());
        assert!(SizeIndex::parse(br#"{"version":99,"sizes":{}}"#).is_none());
        assert!(
            SizeIndex::parse(br#"{"version":1,"sizes":{}}"#).is_none(),
            "version 1 may lack carried UIDLs"
        );
        assert!(SizeIndex::parse(br#"{"version":2,"sizes":{}}"#).is_some());
    }
}
