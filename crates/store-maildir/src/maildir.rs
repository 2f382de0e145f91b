//! Blocking operations on one Maildir: scanning, syncing the uidlist,
//! finding a message again by its base name, delivering, expunging.
//! The async store runs these on tokio's blocking pool.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use popgate_store::StoreError;
use tracing::{info, warn};

use crate::dotlock::DotLock;
use crate::filename;
use crate::uidlist::{self, Uidlist};

/// Dovecot overrides an unchanged `dovecot-uidlist.lock` after this long.
const UIDLIST_STALE_TIMEOUT: Duration = Duration::from_secs(120);
/// Highest fencing token committed by an expunge, in the Maildir root.
const FENCE_FILE: &str = "popgate-fence";
/// How often to look again for a message renamed while we looked.
const FIND_RETRIES: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Cur,
    New,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Cur => "cur",
            Dir::New => "new",
        }
    }
}

/// Where a message's file was last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    pub dir: Dir,
    pub name: String,
    base_len: usize,
}

impl FileRef {
    pub fn new(dir: Dir, name: String) -> Self {
        let base_len = filename::base(&name).len();
        FileRef {
            dir,
            name,
            base_len,
        }
    }

    pub fn base(&self) -> &str {
        &self.name[..self.base_len]
    }
}

/// One message of a snapshot, before it becomes a `MessageInfo`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub uid: u32,
    pub file: FileRef,
    pub size: u64,
    /// The uidlist's `P` extension (saved UIDL), `O` (POP3 order), `G` (GUID).
    pub saved_uidl: Option<String>,
    pub pop3_order: Option<u64>,
    pub guid: Option<String>,
}

/// The messages of a maildrop, in POP3 order.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub uid_validity: u32,
    pub entries: Vec<Entry>,
}

/// Maps an I/O error where "not found" is not a vanished message.
pub fn io_error(context: &str, e: &io::Error) -> StoreError {
    match e.kind() {
        io::ErrorKind::NotFound => StoreError::Temporary(format!("{context}: {e}")),
        _ => StoreError::from_io(context, e),
    }
}

#[derive(Clone, Debug)]
pub struct Maildir {
    root: PathBuf,
    lock_timeout: Duration,
}

impl Maildir {
    pub fn new(root: PathBuf, lock_timeout: Duration) -> Self {
        Maildir { root, lock_timeout }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, dir: Dir) -> PathBuf {
        self.root.join(dir.name())
    }

    pub fn path_of(&self, file: &FileRef) -> PathBuf {
        self.dir(file.dir).join(&file.name)
    }

    fn uidlist_path(&self) -> PathBuf {
        self.root.join(uidlist::FILE_NAME)
    }

    fn lock_uidlist(&self) -> Result<Option<DotLock>, StoreError> {
        DotLock::acquire(
            &self.uidlist_path(),
            self.lock_timeout,
            UIDLIST_STALE_TIMEOUT,
        )
        .map_err(|e| io_error("locking dovecot-uidlist", &e))
    }

    /// Creates root, cur/, new/ and tmp/ (0700, as Dovecot does).
    pub fn create(&self) -> io::Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for sub in ["cur", "new", "tmp"] {
            builder.create(self.root.join(sub))?;
        }
        Ok(())
    }

    /// Lists one directory's messages: names only, no stat. Missing is empty.
    fn list(&self, dir: Dir) -> io::Result<Vec<String>> {
        let rd = match fs::read_dir(self.dir(dir)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                warn!(dir = %self.dir(dir).display(), "ignoring a file whose name is not UTF-8");
                continue;
            };
            if name.starts_with('.') || name.contains(['\r', '\n']) {
                continue;
            }
            // Only regular files are mail: a symlink could point anywhere
            // (another tenant's mail, /etc), and popgate may run privileged.
            match entry.file_type() {
                Ok(t) if t.is_file() => {}
                Ok(t) if t.is_symlink() => {
                    warn!(file = %name, "ignoring a symlink in a Maildir");
                    continue;
                }
                _ => continue,
            }
            names.push(name);
        }
        Ok(names)
    }

    /// Every message file, after moving new/ into cur/ (as `<name>:2,`).
    /// new/ is read first: a file another process moves meanwhile is then
    /// still seen in cur/.
    pub fn scan(&self) -> io::Result<Vec<FileRef>> {
        let mut files = Vec::new();
        for name in self.list(Dir::New)? {
            let cur = filename::cur_name(&name);
            match fs::rename(
                self.dir(Dir::New).join(&name),
                self.dir(Dir::Cur).join(&cur),
            ) {
                Ok(()) => files.push(FileRef::new(Dir::Cur, cur)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(file = %name, "cannot move new/ to cur/: {e}");
                    files.push(FileRef::new(Dir::New, name));
                }
            }
        }
        let cur = self.list(Dir::Cur)?;
        files.extend(cur.into_iter().map(|name| FileRef::new(Dir::Cur, name)));

        let mut keep = vec![true; files.len()];
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            if let Some(&first) = seen.get(f.base()) {
                // A file just moved from new/ is listed in cur/ again: the
                // same file, not a clash.
                let same_file = files[first].dir == f.dir && files[first].name == f.name;
                if !same_file {
                    warn!(first = %files[first].name, second = %f.name, "two files share one base name; using the first");
                }
                keep[i] = false;
            } else {
                seen.insert(f.base(), i);
            }
        }
        drop(seen);
        let mut keep = keep.into_iter();
        files.retain(|_| keep.next().unwrap_or(true));
        Ok(files)
    }

    pub fn read_uidlist(&self) -> io::Result<Option<Uidlist>> {
        let path = self.uidlist_path();
        match fs::read(&path) {
            Ok(data) => Ok(Uidlist::parse(&data, &path.to_string_lossy())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the uidlist: write `dovecot-uidlist.tmp`, fdatasync, rename
    /// over. The caller holds the uidlist dotlock.
    pub fn write_uidlist(&self, list: &mut Uidlist) -> io::Result<()> {
        list.guid.get_or_insert_with(uidlist::new_guid);
        let path = self.uidlist_path();
        let tmp = self.root.join(format!("{}.tmp", uidlist::FILE_NAME));
        let data = list.serialize();
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&data)?;
        // Dovecot trusts its index while the uidlist's size and mtime are
        // unchanged: make sure a rewrite never looks the same.
        if let Ok(old) = fs::metadata(&path) {
            let new = f.metadata()?;
            if old.size() == new.size() && old.modified().ok() >= new.modified().ok() {
                let bumped = old.modified()? + Duration::from_millis(1);
                f.set_modified(bumped)?;
            }
        }
        f.sync_data()?;
        fs::rename(&tmp, &path)
    }

    /// Reads a whole message and returns its POP3 size.
    pub fn compute_size(&self, file: &FileRef) -> io::Result<Option<u64>> {
        let Some(mut f) = self.open_message(file)? else {
            return Ok(None);
        };
        let mut counter = pop3_proto::crlf::CrlfCounter::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(Some(counter.finish()));
            }
            counter.feed(&buf[..n]);
        }
    }

    /// Takes the snapshot for `open`: moves new/ to cur/, gives new files
    /// UIDs and caches computed sizes in the uidlist (under its dotlock,
    /// only when something changed).
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        if !self.root.is_dir() {
            return Ok(Snapshot::default());
        }
        let files = self.scan().map_err(|e| io_error("scanning maildir", &e))?;
        let mut list = self
            .read_uidlist()
            .map_err(|e| io_error("reading dovecot-uidlist", &e))?;

        // Sizes that neither the name nor the uidlist knows: read the files
        // now, before locking, so the lock is held only briefly.
        let mut computed: HashMap<String, u64> = HashMap::new();
        let mut matched = match_records(list.as_ref(), &files);
        let mut unassigned = false;
        {
            for (f, m) in files.iter().zip(&matched) {
                let record = m.map(|i| &list.as_ref().expect("matched").records[i]);
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
        }

        if unassigned || !computed.is_empty() {
            match self.lock_uidlist()? {
                Some(_lock) => {
                    let mut fresh = self
                        .read_uidlist()
                        .map_err(|e| io_error("reading dovecot-uidlist", &e))?
                        .unwrap_or_else(|| Uidlist::new(unix_now()));
                    if assign_and_cache(&mut fresh, &files, &computed) {
                        self.write_uidlist(&mut fresh)
                            .map_err(|e| io_error("writing dovecot-uidlist", &e))?;
                    }
                    matched = match_records(Some(&fresh), &files);
                    list = Some(fresh);
                }
                None => warn!(
                    maildir = %self.root.display(),
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

    /// Looks for a message by base name in cur/, then new/.
    pub fn locate(&self, base: &str) -> io::Result<Option<FileRef>> {
        for dir in [Dir::Cur, Dir::New] {
            if let Some(name) = self
                .list(dir)?
                .into_iter()
                .find(|n| filename::base(n) == base)
            {
                return Ok(Some(FileRef::new(dir, name)));
            }
        }
        Ok(None)
    }

    /// Opens a message where it was seen, or wherever it went (a flag change
    /// renames it). `None` when it is gone.
    pub fn open_message(&self, hint: &FileRef) -> io::Result<Option<File>> {
        self.with_file(hint, |path| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
        })
    }

    /// Unlinks a message, wherever it went. `false` when it was gone already.
    pub fn unlink_message(&self, hint: &FileRef) -> io::Result<bool> {
        Ok(self
            .with_file(hint, |path| fs::remove_file(path))?
            .is_some())
    }

    fn with_file<T>(
        &self,
        hint: &FileRef,
        op: impl Fn(&Path) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        match op(&self.path_of(hint)) {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for _ in 0..FIND_RETRIES {
            let Some(found) = self.locate(hint.base())? else {
                return Ok(None);
            };
            match op(&self.path_of(&found)) {
                Ok(v) => return Ok(Some(v)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // renamed again
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Deletes messages, if `fence` is not older than the newest committed
    /// one. Holds the uidlist lock throughout, so the fence check, the
    /// unlinks and the uidlist update are one step for every popgate and
    /// Dovecot process.
    pub fn expunge(&self, targets: &[FileRef], fence: u64) -> Result<(usize, usize), StoreError> {
        if !self.root.is_dir() {
            return Ok((0, targets.len()));
        }
        let Some(_lock) = self.lock_uidlist()? else {
            return Err(StoreError::Temporary(
                "dovecot-uidlist is locked by another process".into(),
            ));
        };
        self.commit_fence(fence)?;

        let (mut deleted, mut gone) = (0, 0);
        let mut removed: Vec<&str> = Vec::with_capacity(targets.len());
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
            removed.push(t.base());
        }
        // Forget the removed files' records. Best effort: a stale record
        // is harmless (nothing has its base name any more).
        match self.read_uidlist() {
            Ok(Some(mut list)) => {
                let before = list.records.len();
                list.records.retain(|r| !removed.contains(&r.base.as_str()));
                if list.records.len() != before
                    && let Err(e) = self.write_uidlist(&mut list)
                {
                    warn!(maildir = %self.root.display(), "updating dovecot-uidlist after expunge: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(maildir = %self.root.display(), "reading dovecot-uidlist after expunge: {e}")
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok((deleted, gone)),
        }
    }

    /// Refuses a fence older than the stored one; stores a newer one.
    /// The caller holds the uidlist lock.
    fn commit_fence(&self, fence: u64) -> Result<(), StoreError> {
        let path = self.root.join(FENCE_FILE);
        let current = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or_else(|_| {
                warn!(path = %path.display(), "ignoring a corrupt fence file");
                0
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error("reading the fence file", &e)),
        };
        if fence < current {
            info!(maildir = %self.root.display(), fence, current, "refusing expunge with a stale fence");
            return Err(StoreError::Fenced(fence));
        }
        if fence > current {
            let tmp = self.root.join(format!("{FENCE_FILE}.tmp"));
            let write = || -> io::Result<()> {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(format!("{fence}\n").as_bytes())?;
                f.sync_data()?;
                fs::rename(&tmp, &path)
            };
            write().map_err(|e| io_error("writing the fence file", &e))?;
        }
        Ok(())
    }

    /// Moves a fully written, synced tmp/ file into new/ under `name`,
    /// never replacing an existing file. `false` if the name was taken.
    pub fn deliver(&self, tmp: &Path, name: &str) -> io::Result<bool> {
        let target = self.dir(Dir::New).join(name);
        match fs::hard_link(tmp, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            // EPERM or EOPNOTSUPP: this filesystem has no hard links.
            Err(e)
                if e.kind() == io::ErrorKind::Unsupported
                    || matches!(e.raw_os_error(), Some(1 | 95)) =>
            {
                // Rename instead, as Dovecot always does.
                fs::rename(tmp, &target)?;
                sync_dir(&self.dir(Dir::New));
                return Ok(true);
            }
            Err(e) => return Err(e),
        }
        fs::remove_file(tmp)?;
        sync_dir(&self.dir(Dir::New));
        Ok(true)
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
            .read_uidlist()
            .map_err(|e| io_error("reading dovecot-uidlist", &e))?
            .unwrap_or_else(|| Uidlist::new(unix_now()));
        if let Some(r) = list.records.iter().find(|r| r.base == base) {
            return Ok((r.uid, list.uid_validity));
        }
        let uid = list.add(base).ok_or_else(|| {
            StoreError::Permanent(format!("{}: no UIDs left", self.root.display()))
        })?;
        self.write_uidlist(&mut list)
            .map_err(|e| io_error("writing dovecot-uidlist", &e))?;
        Ok((uid, list.uid_validity))
    }

    pub fn tmp_path(&self, name: &str) -> PathBuf {
        self.root.join("tmp").join(name)
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

fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(dir = %dir.display(), "fsync of directory: {e}");
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}
