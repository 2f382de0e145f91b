//! Syncing a Maildir with its `dovecot-uidlist`: reading it (capped),
//! giving new files UIDs in Dovecot's order, caching computed sizes, and
//! replacing it atomically.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use popgate_store::StoreError;
use tracing::warn;

use crate::filename;
use crate::maildir::{Entry, FileRef, Open, Snapshot, io_error};
use crate::uidlist::{self, Uidlist};

/// The largest `dovecot-uidlist` read. Dovecot's records take about 100
/// bytes a message, so this is some 600,000 messages, far more than a POP3
/// maildrop holds; anything larger is not a uidlist (a link to a device,
/// a file grown without end) and must not be read into memory.
pub const UIDLIST_MAX: u64 = 64 * 1024 * 1024;

impl Open {
    /// The uidlist; `None` when there is none or its header is unusable.
    /// A uidlist that is not a regular file, or larger than
    /// [`UIDLIST_MAX`], is an error (temporary), never read to its end.
    pub fn read_uidlist(&self) -> io::Result<Option<Uidlist>> {
        let path = self.uidlist_dir().path().join(uidlist::FILE_NAME);
        Ok(self
            .uidlist_dir()
            .read_capped(uidlist::FILE_NAME, UIDLIST_MAX)?
            .and_then(|data| Uidlist::parse(&data, &path.to_string_lossy())))
    }

    /// Courier's `courierpop3dsizelist`, parsed; `None` when there is none.
    pub fn courier_list(&self) -> Result<Option<Vec<crate::courier::Listed>>, StoreError> {
        let path = self.root.path().join(crate::courier::FILE_NAME);
        Ok(self
            .root
            .read_capped(crate::courier::FILE_NAME, crate::courier::MAX)
            .map_err(|e| io_error("reading courierpop3dsizelist", &e))?
            .and_then(|data| crate::courier::parse(&data, &path.to_string_lossy())))
    }

    fn read_uidlist_or_fail(&self) -> Result<Option<Uidlist>, StoreError> {
        self.read_uidlist()
            .map_err(|e| io_error("reading dovecot-uidlist", &e))
    }

    /// Replaces the uidlist: write `dovecot-uidlist.tmp` (created
    /// exclusively, with the Maildir's owner and mode), fdatasync, rename
    /// over. The caller holds the uidlist dotlock.
    pub fn write_uidlist(&self, list: &mut Uidlist) -> io::Result<()> {
        list.guid.get_or_insert_with(uidlist::new_guid);
        let tmp = format!("{}.tmp", uidlist::FILE_NAME);
        let data = list.serialize();
        let mut f = self.uidlist_dir().create_temp(&tmp, &self.perms)?;
        let written = (|| {
            f.write_all(&data)?;
            // Dovecot trusts its index while the uidlist's size and mtime
            // are unchanged: make sure a rewrite never looks the same.
            if let Ok(old) = self.uidlist_dir().stat_at(uidlist::FILE_NAME) {
                let new = f.metadata()?;
                let old_mtime = u64::try_from(old.st_mtime).ok().and_then(|secs| {
                    let nanos = u32::try_from(old.st_mtime_nsec).unwrap_or(0) % 1_000_000_000;
                    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
                });
                if let Some(old_mtime) = old_mtime
                    && old.st_size as u64 == new.len()
                    && Some(old_mtime) >= new.modified().ok()
                    && let Some(bumped) = old_mtime.checked_add(Duration::from_millis(1))
                {
                    f.set_modified(bumped)?;
                }
            }
            f.sync_data()?;
            self.uidlist_dir()
                .rename(&tmp, self.uidlist_dir(), uidlist::FILE_NAME)
        })();
        if written.is_err() {
            let _ = self.uidlist_dir().unlink(&tmp);
        }
        written
    }

    /// Takes the snapshot for `open`: moves new/ to cur/, gives new files
    /// UIDs and caches computed sizes in the uidlist (under its dotlock,
    /// only when something changed).
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let files = self.scan().map_err(|e| io_error("scanning maildir", &e))?;
        let mut list = self.read_uidlist_or_fail()?;

        // Sizes that neither the name nor the uidlist knows: read the files
        // now, before locking, so the lock is held only briefly.
        let mut computed: HashMap<String, u64> = HashMap::new();
        let mut matched = match_records(list.as_ref(), &files);
        let mut unassigned = false;
        for (f, m) in files.iter().zip(&matched) {
            let record = m.and_then(|i| list.as_ref().map(|l| &l.records[i]));
            unassigned |= record.is_none();
            let known = filename::virtual_size(&f.name).is_some()
                || record
                    .and_then(|r| r.ext(b'W'))
                    .is_some_and(|w| w.parse::<u64>().is_ok());
            if !known {
                match self.compute_size(f) {
                    Ok(Some(size)) => {
                        computed.insert(f.base().to_owned(), size);
                    }
                    Ok(None) => {} // gone meanwhile
                    Err(e) => return Err(io_error(&format!("reading {}", f.name), &e)),
                }
            }
        }

        if unassigned || !computed.is_empty() {
            match self.lock_uidlist()? {
                Some(_lock) => {
                    let mut fresh = self
                        .read_uidlist_or_fail()?
                        .unwrap_or_else(|| Uidlist::new(unix_now()));
                    if assign_and_cache(&mut fresh, &files, &computed) {
                        self.write_uidlist(&mut fresh)
                            .map_err(|e| io_error("writing dovecot-uidlist", &e))?;
                    }
                    matched = match_records(Some(&fresh), &files);
                    list = Some(fresh);
                }
                None => warn!(
                    maildir = %self.root_path().display(),
                    "dovecot-uidlist stayed locked; new messages wait for the next session"
                ),
            }
        }

        let Some(list) = list else {
            return Ok(Snapshot::default());
        };
        let mut entries = Vec::with_capacity(files.len());
        for (f, m) in files.into_iter().zip(matched) {
            let Some(i) = m else {
                continue;
            };
            let r = &list.records[i];
            let size = filename::virtual_size(&f.name)
                .or_else(|| r.ext(b'W').and_then(|w| w.parse().ok()))
                .or_else(|| computed.get(f.base()).copied());
            let Some(size) = size else { continue }; // vanished before we could size it
            entries.push(Entry {
                uid: r.uid,
                saved_uidl: r.ext(b'P').map(str::to_owned),
                pop3_order: r.ext(b'O').and_then(|o| o.parse().ok()).filter(|&o| o > 0),
                guid: r.ext(b'G').map(str::to_owned),
                size,
                file: f,
            });
        }
        // Dovecot's POP3 order: messages with an `O` number first, by it,
        // then the rest; UID order otherwise.
        entries.sort_by_key(|e| (e.pop3_order.unwrap_or(u64::MAX), e.uid));
        Ok(Snapshot {
            uid_validity: list.uid_validity,
            entries,
        })
    }

    /// Gives a delivered file its UID (or finds the one someone else gave
    /// it). Returns the UID and the mailbox's UIDVALIDITY.
    pub fn assign_uid(&self, base: &str) -> Result<(u32, u32), StoreError> {
        let Some(_lock) = self.lock_uidlist()? else {
            return Err(StoreError::Temporary(
                "dovecot-uidlist is locked by another process".into(),
            ));
        };
        let mut list = self
            .read_uidlist_or_fail()?
            .unwrap_or_else(|| Uidlist::new(unix_now()));
        if let Some(r) = list.records.iter().find(|r| r.base == base) {
            return Ok((r.uid, list.uid_validity));
        }
        let uid = list.add(base).ok_or_else(|| {
            StoreError::Permanent(format!("{}: no UIDs left", self.root_path().display()))
        })?;
        self.write_uidlist(&mut list)
            .map_err(|e| io_error("writing dovecot-uidlist", &e))?;
        Ok((uid, list.uid_validity))
    }
}

impl Open {
    /// Delivers an imported message (tmp/ to new/ as `base`) with its
    /// carried UIDL as the uidlist's `P`, all under the uidlist lock: a
    /// session syncing meanwhile waits, and never lists the message under
    /// another UIDL. The record is written before the file moves into new/,
    /// so a crash between the two leaves a record without a file (dropped
    /// here on the next import of that UIDL), never a message without its
    /// UIDL. A UIDL another message carries already is refused.
    pub fn deliver_carried(
        &self,
        tmp_name: &str,
        base: &str,
        uidl: &str,
    ) -> Result<(), StoreError> {
        let Some(_lock) = self.lock_uidlist()? else {
            return Err(StoreError::Temporary(
                "dovecot-uidlist is locked by another process".into(),
            ));
        };
        let mut list = self
            .read_uidlist_or_fail()?
            .unwrap_or_else(|| Uidlist::new(unix_now()));
        let mut stale = Vec::new();
        for (i, r) in list.records.iter().enumerate() {
            if r.ext(b'P') == Some(uidl) {
                let found = self
                    .locate(&r.base)
                    .map_err(|e| io_error("looking for a message", &e))?;
                if found.is_some() {
                    return Err(StoreError::Permanent(format!(
                        "UIDL {uidl} is in the mailbox already"
                    )));
                }
                stale.push(i);
            }
        }
        for i in stale.into_iter().rev() {
            list.records.remove(i);
        }
        if list.add(base).is_none() {
            return Err(StoreError::Permanent(format!(
                "{}: no UIDs left",
                self.root_path().display()
            )));
        }
        if let Some(r) = list.records.last_mut() {
            r.set_ext(b'P', uidl);
        }
        self.write_uidlist(&mut list)
            .map_err(|e| io_error("writing dovecot-uidlist", &e))?;
        let failure = match self.deliver(tmp_name, base) {
            Ok(true) => None,
            Ok(false) => Some(StoreError::Temporary(format!("{base} exists in new/"))),
            Err(e) => Some(io_error("moving tmp/ to new/", &e)),
        };
        match failure {
            None => Ok(()),
            Some(e) => {
                // Best effort: a record without its file is harmless anyway.
                list.records.pop();
                let _ = self.write_uidlist(&mut list);
                Err(e)
            }
        }
    }
}

/// For each file, the index of its record in `list`, if it has one.
fn match_records(list: Option<&Uidlist>, files: &[FileRef]) -> Vec<Option<usize>> {
    match list {
        Some(list) => {
            let index = list.index();
            files.iter().map(|f| index.get(f.base()).copied()).collect()
        }
        None => vec![None; files.len()],
    }
}

/// Adds records for files without one (in Dovecot's order) and caches
/// computed sizes as `W`. Returns whether the uidlist changed.
fn assign_and_cache(
    list: &mut Uidlist,
    files: &[FileRef],
    computed: &HashMap<String, u64>,
) -> bool {
    let mut changed = false;
    let mut new_files: Vec<&FileRef> = {
        let index = list.index();
        files
            .iter()
            .filter(|f| !index.contains_key(f.base()))
            .collect()
    };
    new_files.sort_by(|a, b| filename::sort_cmp(&a.name, &b.name));
    for f in new_files {
        if list.add(f.base()).is_none() {
            warn!(file = %f.name, "no UIDs left in dovecot-uidlist");
            break;
        }
        changed = true;
    }
    for r in &mut list.records {
        if let Some(&size) = computed.get(&r.base)
            && r.ext(b'W').and_then(|w| w.parse::<u64>().ok()).is_none()
        {
            r.set_ext(b'W', size.to_string());
            changed = true;
        }
    }
    changed
}

pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}
