//! Blocking operations on one Maildir: opening it through directory
//! handles, scanning, finding a message again by its base name,
//! delivering. Syncing the uidlist is in [`crate::sync`], expunging in
//! [`crate::fence`]. The async store runs these on tokio's blocking pool.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use popgate_store::StoreError;
use rustix::fs::FileType;
use tracing::warn;

use crate::dotlock::DotLock;
use crate::filename;
use crate::location::Location;
use crate::safe_fs::{DirFd, Perms};
use crate::uidlist;

/// Dovecot overrides an unchanged `dovecot-uidlist.lock` after this long.
const UIDLIST_STALE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often to look again for a message renamed while we looked.
const FIND_RETRIES: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Cur,
    New,
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

/// A mailbox's Maildir, not yet opened: where it is and how to reach it.
#[derive(Clone, Debug)]
pub struct Maildir {
    location: Arc<Location>,
    /// `CONTROL=`: the directory of `dovecot-uidlist`, when not the Maildir.
    control: Option<Arc<Location>>,
    follow_symlinks: bool,
    lock_timeout: Duration,
}

impl Maildir {
    pub fn new(
        location: Location,
        control: Option<Location>,
        follow_symlinks: bool,
        lock_timeout: Duration,
    ) -> Self {
        Maildir {
            location: Arc::new(location),
            control: control.map(Arc::new),
            follow_symlinks,
            lock_timeout,
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.location.path
    }

    /// Opens the Maildir and its cur/ and new/ (tmp/ too with `tmp`);
    /// `None` when the Maildir does not exist. A missing subdirectory is
    /// an empty one; a symlinked one (unless the tenant follows them) or
    /// one that is not a directory is an error.
    pub fn open(&self) -> Result<Option<Open>, StoreError> {
        let context = || format!("opening {}", self.path().display());
        let root = self
            .location
            .open(self.follow_symlinks)
            .map_err(|e| io_error(&context(), &e))?;
        let Some(root) = root else { return Ok(None) };
        self.open_subdirs(root, false)
            .map(Some)
            .map_err(|e| io_error(&context(), &e))
    }

    /// Opens the Maildir, creating it and cur/ new/ tmp/ when missing.
    pub fn create(&self) -> Result<Open, StoreError> {
        let context = || format!("creating {}", self.path().display());
        let root = self
            .location
            .create(self.follow_symlinks)
            .map_err(|e| io_error(&context(), &e))?;
        self.open_subdirs(root, true)
            .map_err(|e| io_error(&context(), &e))
    }

    fn open_subdirs(&self, root: DirFd, create: bool) -> io::Result<Open> {
        let perms = Perms::of(&root)?;
        let sub = |name: &str| -> io::Result<Option<DirFd>> {
            let name = std::ffi::OsStr::new(name);
            let opened = if create {
                root.create_dir(name, &perms, self.follow_symlinks)
            } else {
                root.open_dir(name, self.follow_symlinks)
            };
            match opened {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        let cur = sub("cur")?;
        let new = sub("new")?;
        let tmp = if create { sub("tmp")? } else { None };
        // The control directory is created when missing (as Dovecot does),
        // with the Maildir's owner and mode: the uidlist is written there
        // at the first sync, by popgate or by Dovecot.
        let control = match &self.control {
            Some(c) => Some(c.open_or_create_as(self.follow_symlinks, &perms)?),
            None => None,
        };
        Ok(Open {
            root,
            control,
            cur,
            new,
            tmp,
            perms,
            lock_timeout: self.lock_timeout,
        })
    }
}

/// An open Maildir: handles on its directory and subdirectories. Every
/// operation goes through them, so what a customer renames or links
/// meanwhile is never followed out of this Maildir.
#[derive(Debug)]
pub struct Open {
    pub(crate) root: DirFd,
    /// `CONTROL=`'s directory, holding `dovecot-uidlist` and its lock.
    control: Option<DirFd>,
    cur: Option<DirFd>,
    new: Option<DirFd>,
    tmp: Option<DirFd>,
    /// Owner, group and modes for what popgate creates here.
    pub(crate) perms: Perms,
    lock_timeout: Duration,
}

impl Open {
    pub fn root_path(&self) -> &std::path::Path {
        self.root.path()
    }

    fn dir(&self, dir: Dir) -> io::Result<&DirFd> {
        let d = match dir {
            Dir::Cur => self.cur.as_ref(),
            Dir::New => self.new.as_ref(),
        };
        d.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such subdirectory"))
    }

    fn tmp(&self) -> io::Result<&DirFd> {
        self.tmp
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no tmp/"))
    }

    /// The directory of `dovecot-uidlist`: `CONTROL=`'s, else the Maildir.
    pub(crate) fn uidlist_dir(&self) -> &DirFd {
        self.control.as_ref().unwrap_or(&self.root)
    }

    pub(crate) fn lock_uidlist(&self) -> Result<Option<DotLock<'_>>, StoreError> {
        DotLock::acquire(
            self.uidlist_dir(),
            uidlist::FILE_NAME,
            &self.perms,
            self.lock_timeout,
            UIDLIST_STALE_TIMEOUT,
        )
        .map_err(|e| io_error("locking dovecot-uidlist", &e))
    }

    /// Lists one directory's messages: names only, no stat. Missing is empty.
    fn list(&self, dir: Dir) -> io::Result<Vec<String>> {
        let Ok(d) = self.dir(dir) else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for (name, kind) in d.entries()? {
            let Ok(name) = String::from_utf8(name) else {
                warn!(dir = %d.path().display(), "ignoring a file whose name is not UTF-8");
                continue;
            };
            if name.starts_with('.') || name.contains(['\r', '\n']) {
                continue;
            }
            // Only regular files are mail: a symlink could point anywhere
            // (another tenant's mail, /etc), and popgate may run privileged.
            match kind {
                FileType::RegularFile => {}
                FileType::Symlink => {
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
            let cur_name = filename::cur_name(&name);
            let moved = match (&self.new, &self.cur) {
                (Some(new), Some(cur)) => new.rename(&name, cur, &cur_name),
                _ => Err(io::Error::other("no cur/")),
            };
            match moved {
                Ok(()) => files.push(FileRef::new(Dir::Cur, cur_name)),
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

    /// Reads a whole message and returns its POP3 size.
    pub fn compute_size(&self, file: &FileRef) -> io::Result<Option<u64>> {
        let Some(f) = self.open_message(file)? else {
            return Ok(None);
        };
        popgate_store::pop3_size_blocking(f).map(Some)
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
    /// renames it). `None` when it is gone. Only a regular file is opened.
    pub fn open_message(&self, hint: &FileRef) -> io::Result<Option<File>> {
        self.with_file(hint, |dir, name| dir.open_file(name))
    }

    /// Unlinks a message, wherever it went. `false` when it was gone already.
    pub fn unlink_message(&self, hint: &FileRef) -> io::Result<bool> {
        Ok(self
            .with_file(hint, |dir, name| dir.unlink(name))?
            .is_some())
    }

    fn with_file<T>(
        &self,
        hint: &FileRef,
        op: impl Fn(&DirFd, &str) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        let at = |f: &FileRef| self.dir(f.dir).and_then(|d| op(d, &f.name));
        match at(hint) {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for _ in 0..FIND_RETRIES {
            let Some(found) = self.locate(hint.base())? else {
                return Ok(None);
            };
            match at(&found) {
                Ok(v) => return Ok(Some(v)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // renamed again
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Creates a file in tmp/ for a delivery: exclusively, with the
    /// Maildir's owner and mode.
    pub fn create_tmp(&self, name: &str) -> io::Result<File> {
        self.tmp()?.create_new(name, &self.perms)
    }

    pub fn unlink_tmp(&self, name: &str) -> io::Result<()> {
        self.tmp()?.unlink(name)
    }

    /// Moves a fully written, synced tmp/ file into new/ under `name`,
    /// never replacing an existing file. `false` if the name was taken.
    pub fn deliver(&self, tmp_name: &str, name: &str) -> io::Result<bool> {
        let tmp = self.tmp()?;
        let new = self.dir(Dir::New)?;
        match tmp.link(tmp_name, new, name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            // EPERM or EOPNOTSUPP: this filesystem has no hard links.
            Err(e)
                if e.kind() == io::ErrorKind::Unsupported
                    || matches!(e.raw_os_error(), Some(1 | 95)) =>
            {
                // Rename instead, as Dovecot always does.
                tmp.rename(tmp_name, new, name)?;
                new.sync();
                return Ok(true);
            }
            Err(e) => return Err(e),
        }
        tmp.unlink(tmp_name)?;
        new.sync();
        Ok(true)
    }
}
