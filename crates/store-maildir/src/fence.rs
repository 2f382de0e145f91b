//! Fenced expunge: the newest committed fencing token is kept in
//! `popgate-fence` in the Maildir root, read and written under the
//! uidlist lock, so a session whose mailbox lock expired cannot delete.

use std::collections::HashSet;
use std::io::{self, Write};

use popgate_store::StoreError;
use tracing::{info, warn};

use crate::maildir::{FileRef, Open, io_error};

/// Highest fencing token committed by an expunge, in the Maildir root.
pub const FENCE_FILE: &str = "popgate-fence";
/// The fence file holds one decimal u64 and a newline (21 bytes); a little
/// room for whitespace, and nothing larger is ever read.
pub const FENCE_MAX: u64 = 256;

/// The token in a fence file's bytes; `None` when they are not one.
pub fn parse_fence(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    text.trim().parse().ok()
}

impl Open {
    /// Deletes messages, if `fence` is not older than the newest committed
    /// one. Holds the uidlist lock throughout, so the fence check, the
    /// unlinks and the uidlist update are one step for every popgate and
    /// Dovecot process.
    pub fn expunge(&self, targets: &[FileRef], fence: u64) -> Result<(usize, usize), StoreError> {
        let Some(_lock) = self.lock_uidlist()? else {
            return Err(StoreError::Temporary(
                "dovecot-uidlist is locked by another process".into(),
            ));
        };
        self.commit_fence(fence)?;

        let (mut deleted, mut gone) = (0, 0);
        let mut removed: HashSet<&str> = HashSet::with_capacity(targets.len());
        let mut failure = None;
        for t in targets {
            match self.unlink_message(t) {
                Ok(true) => deleted += 1,
                Ok(false) => gone += 1,
                Err(e) => {
                    failure = Some(io_error(&format!("deleting {}", t.name), &e));
                    break;
                }
            }
            removed.insert(t.base());
        }
        // Forget the removed files' records. Best effort: a stale record
        // is harmless (nothing has its base name any more). A set: QUIT
        // after deleting all of 50,000 messages is one pass, not n².
        let maildir = self.root_path().display();
        match self.read_uidlist() {
            Ok(Some(mut list)) => {
                let before = list.records.len();
                list.records.retain(|r| !removed.contains(&r.base.as_str()));
                if list.records.len() != before
                    && let Err(e) = self.write_uidlist(&mut list)
                {
                    warn!(%maildir, "updating dovecot-uidlist after expunge: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => warn!(%maildir, "reading dovecot-uidlist after expunge: {e}"),
        }
        match failure {
            Some(e) => Err(e),
            None => Ok((deleted, gone)),
        }
    }

    /// Refuses a fence older than the stored one; stores a newer one.
    /// The caller holds the uidlist lock.
    fn commit_fence(&self, fence: u64) -> Result<(), StoreError> {
        let maildir = self.root_path().display();
        let current = match self.root.read_capped(FENCE_FILE, FENCE_MAX) {
            Ok(Some(data)) => parse_fence(&data).unwrap_or_else(|| {
                warn!(%maildir, "ignoring a corrupt {FENCE_FILE}");
                0
            }),
            Ok(None) => 0,
            Err(e) => return Err(io_error(&format!("reading {FENCE_FILE}"), &e)),
        };
        if fence < current {
            info!(%maildir, fence, current, "refusing expunge with a stale fence");
            return Err(StoreError::Fenced(fence));
        }
        if fence > current {
            let tmp = format!("{FENCE_FILE}.tmp");
            let write = || -> io::Result<()> {
                let mut f = self.root.create_temp(&tmp, &self.perms)?;
                f.write_all(format!("{fence}\n").as_bytes())?;
                f.sync_data()?;
                self.root.rename(&tmp, &self.root, FENCE_FILE)
            };
            write().map_err(|e| {
                let _ = self.root.unlink(&tmp);
                io_error(&format!("writing {FENCE_FILE}"), &e)
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fence_files_parse() {
        assert_eq!(parse_fence(b"42\n"), Some(42));
        assert_eq!(parse_fence(b" 7 "), Some(7));
        assert_eq!(parse_fence(b"18446744073709551615\n"), Some(u64::MAX));
        assert_eq!(parse_fence(b"18446744073709551616\n"), None);
        assert_eq!(parse_fence(b""), None);
        assert_eq!(parse_fence(b"\xff\xfe1\n"), None);
        assert_eq!(parse_fence(b"-1\n"), None);
    }

    proptest! {
        #[test]
        fn fence_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_fence(&data);
        }

        #[test]
        fn fence_round_trips(n in any::<u64>()) {
            prop_assert_eq!(parse_fence(format!("{n}\n").as_bytes()), Some(n));
        }
    }
}
