//! Dovecot's dotlock: `<file>.lock`, created with O_EXCL, holding
//! `<pid>:<hostname>`, removed on release.
//!
//! A lock is overridden (deleted, then taken) the way Dovecot does it:
//! at once when it names a process on this host that no longer exists
//! (checked only once the lock is two seconds old), otherwise when neither
//! the lock file nor the file it protects has changed for `stale_timeout`
//! (Dovecot uses 120 s for `dovecot-uidlist.lock`).
//!
//! Dovecot also overrides a lock that carries its own pid, assuming a crash.
//! popgate runs many sessions in one process, so it first takes an
//! in-process lock on the same lock file (keyed by the directory's device
//! and inode, whatever path reached it): holding that, a lock file with our
//! own pid really is stale (a previous incarnation, e.g. pid 1 in a
//! container).
//!
//! The lock file is reached through the Maildir's directory handle:
//! created with O_EXCL (a planted link is a held lock, never followed),
//! with the Maildir's owner and mode; only a small regular lock file is
//! read for its pid (a FIFO would block the thread); a stale one is
//! removed with unlinkat.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::Stat;
use tracing::{debug, warn};

use crate::safe_fs::{DirFd, Perms};

/// A lock younger than this is not checked for a dead pid (Dovecot's rule).
const STALE_PID_CHECK_SECS: i64 = 2;
const MIN_WAIT: Duration = Duration::from_millis(50);
const MAX_WAIT: Duration = Duration::from_secs(1);
/// A lock file holds `<pid>:<hostname>`; more is not a lock we can read.
const LOCK_CONTENT_MAX: u64 = 512;

/// Which lock: the directory (by device and inode, whatever path reached
/// it) and the lock file's name.
type LockKey = (u64, u64, String);

static HELD: Mutex<Option<HashSet<LockKey>>> = Mutex::new(None);
static RELEASED: Condvar = Condvar::new();

/// A held dotlock; released on drop.
#[derive(Debug)]
pub struct DotLock<'a> {
    dir: &'a DirFd,
    lock_name: String,
    key: LockKey,
    ino: u64,
    dev: u64,
}

impl<'a> DotLock<'a> {
    /// Locks `name` in `dir` (creating `name.lock` with `perms`), waiting
    /// up to `timeout`. `Ok(None)` when the lock stayed busy; an error when
    /// the directory is unwritable.
    pub fn acquire(
        dir: &'a DirFd,
        name: &str,
        perms: &Perms,
        timeout: Duration,
        stale_timeout: Duration,
    ) -> io::Result<Option<DotLock<'a>>> {
        let lock_name = format!("{name}.lock");
        let (dev, ino) = dir.id()?;
        let key = (dev, ino, lock_name.clone());
        let deadline = Instant::now() + timeout;

        if !hold_in_process(&key, deadline) {
            return Ok(None);
        }
        let locker = Locker {
            dir,
            name,
            lock_name: &lock_name,
            perms,
        };
        match locker.acquire_file(deadline, stale_timeout) {
            Ok(Some((dev, ino))) => Ok(Some(DotLock {
                dir,
                lock_name,
                key,
                ino,
                dev,
            })),
            other => {
                release_in_process(&key);
                other.map(|_| None)
            }
        }
    }
}

struct Locker<'a> {
    dir: &'a DirFd,
    name: &'a str,
    lock_name: &'a str,
    perms: &'a Perms,
}

impl Locker<'_> {
    /// Creates the lock file; its device and inode.
    fn acquire_file(
        &self,
        deadline: Instant,
        stale_timeout: Duration,
    ) -> io::Result<Option<(u64, u64)>> {
        let mut stale = StaleCheck::default();
        let mut wait = MIN_WAIT;
        loop {
            // O_EXCL: a planted link or file of that name is a held lock,
            // never followed.
            match self.dir.create_new(self.lock_name, self.perms) {
                Ok(mut file) => {
                    let st = rustix::fs::fstat(&file)?;
                    let content = format!("{}:{}", std::process::id(), crate::filename::hostname());
                    if file.write_all(content.as_bytes()).is_err() {
                        // An empty lock still locks; Dovecot leaves it empty too.
                        let _ = file.set_len(0);
                    }
                    return Ok(Some((st.st_dev, st.st_ino)));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            if stale.is_stale(self.dir, self.name, self.lock_name, stale_timeout)? {
                warn!(lock = %self.dir.path().join(self.lock_name).display(), "overriding stale dotlock");
                match self.dir.unlink(self.lock_name) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                stale = StaleCheck::default();
                // Let a racing overrider finish before we create ours.
                std::thread::sleep(MIN_WAIT + jitter(MIN_WAIT));
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                debug!(lock = %self.dir.path().join(self.lock_name).display(), "dotlock stayed busy");
                return Ok(None);
            }
            std::thread::sleep((wait + jitter(wait)).min(deadline - now));
            wait = (wait * 3 / 2).min(MAX_WAIT);
        }
    }
}

impl Drop for DotLock<'_> {
    fn drop(&mut self) {
        // Delete only our own lock file: if it was overridden, another
        // process holds the lock now.
        let path = self.dir.path().join(&self.lock_name);
        match self.dir.stat_at(&self.lock_name) {
            Ok(st) if st.st_ino == self.ino && st.st_dev == self.dev => {
                if let Err(e) = self.dir.unlink(&self.lock_name) {
                    warn!(lock = %path.display(), "removing dotlock: {e}");
                }
            }
            Ok(_) | Err(_) => {
                warn!(lock = %path.display(), "our dotlock was overridden meanwhile");
            }
        }
        release_in_process(&self.key);
    }
}

fn hold_in_process(key: &LockKey, deadline: Instant) -> bool {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let set = held.get_or_insert_with(HashSet::new);
        if !set.contains(key) {
            set.insert(key.clone());
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        held = RELEASED
            .wait_timeout(held, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn release_in_process(key: &LockKey) {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = held.as_mut() {
        set.remove(key);
    }
    RELEASED.notify_all();
}

/// What a file looked like when last seen, to notice changes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct FileState {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    ctime: i64,
}

impl FileState {
    fn of(st: &Stat) -> Self {
        FileState {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            ctime: st.st_ctime,
        }
    }
}

/// Dovecot's staleness bookkeeping across one acquire's retries.
#[derive(Default)]
struct StaleCheck {
    lock: Option<FileState>,
    file: Option<FileState>,
    last_change: i64,
}

impl StaleCheck {
    fn is_stale(
        &mut self,
        dir: &DirFd,
        name: &str,
        lock_name: &str,
        stale_timeout: Duration,
    ) -> io::Result<bool> {
        let now = unix_now();
        let lock = match dir.stat_at(lock_name) {
            Ok(st) => FileState::of(&st),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        Self::observe(&mut self.lock, lock, &mut self.last_change, now);

        if lock.mtime < now - STALE_PID_CHECK_SECS
            && let Some(pid) = local_pid(dir, lock_name)
            && !process_alive(pid)
        {
            // Dead holder: override unless the lock was replaced meanwhile.
            let again = dir.stat_at(lock_name).map(|st| FileState::of(&st)).ok();
            return Ok(again == Some(lock));
        }

        let stale_secs = stale_timeout.as_secs() as i64;
        if now > self.last_change + stale_secs {
            // Also look at the protected file: a holder that keeps writing
            // it is alive.
            match dir.stat_at(name) {
                Ok(st) => Self::observe(
                    &mut self.file,
                    FileState::of(&st),
                    &mut self.last_change,
                    now,
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(now > self.last_change + stale_secs)
    }

    fn observe(slot: &mut Option<FileState>, st: FileState, last_change: &mut i64, now: i64) {
        if *slot == Some(st) {
            return;
        }
        let change = if slot.is_none() {
            // First sight: the file's own change time (mtime when plausible).
            if st.mtime <= now && st.mtime > st.ctime {
                st.mtime
            } else {
                st.ctime
            }
        } else {
            now
        };
        *last_change = (*last_change).max(change);
        *slot = Some(st);
    }
}

/// The pid in a `<pid>:<host>` lock file, if the host is this one. Only a
/// small regular file is read (a FIFO or a link to a device is no pid).
fn local_pid(dir: &DirFd, lock_name: &str) -> Option<u32> {
    let content = dir.read_capped(lock_name, LOCK_CONTENT_MAX).ok()??;
    let content = std::str::from_utf8(&content).ok()?;
    let (pid, host) = content.trim_end_matches('\n').split_once(':')?;
    if host != crate::filename::hostname() {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Whether a process exists; without /proc we cannot tell and say yes.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        // Not held in this process (we hold the in-process lock): a
        // previous incarnation with the same pid left it.
        return false;
    }
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn jitter(max: Duration) -> Duration {
    let n = getrandom::u32().unwrap_or(0);
    max.mul_f64(f64::from(n) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    const LONG: Duration = Duration::from_secs(120);

    fn open(dir: &TempDir) -> (DirFd, Perms) {
        let fd = DirFd::open_path(dir.path()).unwrap();
        let perms = Perms::of(&fd).unwrap();
        (fd, perms)
    }

    #[test]
    fn lock_excludes_and_releases() {
        let dir = TempDir::new();
        let (fd, perms) = open(&dir);
        let lock_path = dir.path().join("dovecot-uidlist.lock");
        let lock = DotLock::acquire(&fd, "dovecot-uidlist", &perms, Duration::from_secs(1), LONG)
            .unwrap()
            .expect("free lock");
        let content = fs::read_to_string(&lock_path).unwrap();
        assert_eq!(
            content,
            format!("{}:{}", std::process::id(), crate::filename::hostname())
        );
        // Another handle on the same directory is the same lock.
        let fd2 = DirFd::open_path(dir.path()).unwrap();
        let busy = DotLock::acquire(
            &fd2,
            "dovecot-uidlist",
            &perms,
            Duration::from_millis(200),
            LONG,
        )
        .unwrap();
        assert!(
            busy.is_none(),
            "a held lock is not taken twice in one process"
        );
        drop(lock);
        assert!(!lock_path.exists());
        assert!(
            DotLock::acquire(
                &fd2,
                "dovecot-uidlist",
                &perms,
                Duration::from_secs(1),
                LONG
            )
            .unwrap()
            .is_some()
        );
    }

    #[test]
    fn lock_of_a_dead_local_process_is_overridden() {
        let dir = TempDir::new();
        let (fd, perms) = open(&dir);
        let lock_path = dir.path().join("f.lock");
        // pid_max is at most 2^22 on Linux, so this pid does not exist.
        fs::write(
            &lock_path,
            format!("99999999:{}", crate::filename::hostname()),
        )
        .unwrap();
        set_mtime(&lock_path, 10);
        let lock = DotLock::acquire(&fd, "f", &perms, Duration::from_secs(2), LONG).unwrap();
        assert!(lock.is_some(), "a dead holder's lock is overridden");
    }

    #[test]
    fn lock_of_another_host_waits_for_the_stale_timeout() {
        let dir = TempDir::new();
        let (fd, perms) = open(&dir);
        let lock_path = dir.path().join("f.lock");
        fs::write(&lock_path, "1:some-other-host").unwrap();
        let busy = DotLock::acquire(&fd, "f", &perms, Duration::from_millis(300), LONG).unwrap();
        assert!(busy.is_none(), "a fresh foreign lock is respected");
        // Old enough (its ctime is now, so use a short stale timeout).
        let lock = DotLock::acquire(
            &fd,
            "f",
            &perms,
            Duration::from_secs(4),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(lock.is_some(), "an unchanged foreign lock goes stale");
    }

    /// A FIFO planted as an old lock file is not read (which would block
    /// the thread for good) but goes stale like any foreign lock; a link
    /// planted as the lock is not followed.
    #[test]
    fn planted_lock_files_neither_block_nor_are_followed() {
        let dir = TempDir::new();
        let (fd, perms) = open(&dir);
        rustix::fs::mknodat(
            fd.as_fd(),
            "f.lock",
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let old = rustix::fs::Timespec {
            tv_sec: unix_now() - 10,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: old,
            last_modification: old,
        };
        rustix::fs::utimensat(
            fd.as_fd(),
            "f.lock",
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let path = dir.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let fd = DirFd::open_path(&path).unwrap();
            let got = DotLock::acquire(
                &fd,
                "f",
                &perms,
                Duration::from_secs(4),
                Duration::from_secs(1),
            )
            .unwrap()
            .is_some();
            tx.send(got).unwrap();
        });
        let got = rx.recv_timeout(Duration::from_secs(20));
        if got.is_err() {
            // Unblock the reader so that the test process can end.
            let _ = fs::OpenOptions::new()
                .write(true)
                .open(dir.path().join("f.lock"));
            panic!("acquiring a lock blocked on a FIFO");
        }
        assert!(got.unwrap(), "the FIFO went stale and was replaced");

        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("g.lock")).unwrap();
        let busy = DotLock::acquire(&fd, "g", &perms, Duration::from_millis(200), LONG).unwrap();
        assert!(busy.is_none(), "a planted link is a held lock");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn lock_file_takes_the_directory_mode() {
        let dir = TempDir::new();
        fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o770),
        )
        .unwrap();
        let (fd, perms) = open(&dir);
        let _lock = DotLock::acquire(&fd, "f", &perms, Duration::from_secs(1), LONG)
            .unwrap()
            .unwrap();
        let meta = fs::metadata(dir.path().join("f.lock")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o660);
    }

    fn set_mtime(path: &Path, secs_ago: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs_ago);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}
