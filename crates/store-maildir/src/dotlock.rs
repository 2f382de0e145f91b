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
//! in-process lock on the same path: holding that, a lock file with our own
//! pid really is stale (a previous incarnation, e.g. pid 1 in a container).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

/// A lock younger than this is not checked for a dead pid (Dovecot's rule).
const STALE_PID_CHECK_SECS: i64 = 2;
const MIN_WAIT: Duration = Duration::from_millis(50);
const MAX_WAIT: Duration = Duration::from_secs(1);

static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
static RELEASED: Condvar = Condvar::new();

/// A held dotlock; released on drop.
#[derive(Debug)]
pub struct DotLock {
    lock_path: PathBuf,
    ino: u64,
    dev: u64,
}

impl DotLock {
    /// Locks `path` (creating `path.lock`), waiting up to `timeout`.
    /// `Ok(None)` when the lock stayed busy; an error when the directory
    /// is missing or unwritable.
    pub fn acquire(
        path: &Path,
        timeout: Duration,
        stale_timeout: Duration,
    ) -> io::Result<Option<DotLock>> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let deadline = Instant::now() + timeout;

        if !hold_in_process(&lock_path, deadline) {
            return Ok(None);
        }
        match Self::acquire_file(path, &lock_path, deadline, stale_timeout) {
            Ok(Some(lock)) => Ok(Some(lock)),
            other => {
                release_in_process(&lock_path);
                other
            }
        }
    }

    fn acquire_file(
        path: &Path,
        lock_path: &Path,
        deadline: Instant,
        stale_timeout: Duration,
    ) -> io::Result<Option<DotLock>> {
        let mut stale = StaleCheck::default();
        let mut wait = MIN_WAIT;
        loop {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(lock_path)
            {
                Ok(mut file) => {
                    let meta = file.metadata()?;
                    let content = format!("{}:{}", std::process::id(), crate::filename::hostname());
                    if file.write_all(content.as_bytes()).is_err() {
                        // An empty lock still locks; Dovecot leaves it empty too.
                        let _ = file.set_len(0);
                    }
                    return Ok(Some(DotLock {
                        lock_path: lock_path.to_owned(),
                        ino: meta.ino(),
                        dev: meta.dev(),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            if stale.is_stale(path, lock_path, stale_timeout)? {
                warn!(lock = %lock_path.display(), "overriding stale dotlock");
                match fs::remove_file(lock_path) {
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
                debug!(lock = %lock_path.display(), "dotlock stayed busy");
                return Ok(None);
            }
            std::thread::sleep((wait + jitter(wait)).min(deadline - now));
            wait = (wait * 3 / 2).min(MAX_WAIT);
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        // Delete only our own lock file: if it was overridden, another
        // process holds the lock now.
        match fs::symlink_metadata(&self.lock_path) {
            Ok(m) if m.ino() == self.ino && m.dev() == self.dev => {
                if let Err(e) = fs::remove_file(&self.lock_path) {
                    warn!(lock = %self.lock_path.display(), "removing dotlock: {e}");
                }
            }
            Ok(_) | Err(_) => {
                warn!(lock = %self.lock_path.display(), "our dotlock was overridden meanwhile");
            }
        }
        release_in_process(&self.lock_path);
    }
}

fn hold_in_process(lock_path: &Path, deadline: Instant) -> bool {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let set = held.get_or_insert_with(HashSet::new);
        if !set.contains(lock_path) {
            set.insert(lock_path.to_owned());
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

fn release_in_process(lock_path: &Path) {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = held.as_mut() {
        set.remove(lock_path);
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
    fn of(m: &fs::Metadata) -> Self {
        FileState {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            ctime: m.ctime(),
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
        path: &Path,
        lock_path: &Path,
        stale_timeout: Duration,
    ) -> io::Result<bool> {
        let now = unix_now();
        let lock = match fs::symlink_metadata(lock_path) {
            Ok(m) => FileState::of(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        Self::observe(&mut self.lock, lock, &mut self.last_change, now);

        if lock.mtime < now - STALE_PID_CHECK_SECS
            && let Some(pid) = local_pid(lock_path)
            && !process_alive(pid)
        {
            // Dead holder: override unless the lock was replaced meanwhile.
            let again = fs::symlink_metadata(lock_path)
                .map(|m| FileState::of(&m))
                .ok();
            return Ok(again == Some(lock));
        }

        let stale_secs = stale_timeout.as_secs() as i64;
        if now > self.last_change + stale_secs {
            // Also look at the protected file: a holder that keeps writing
            // it is alive.
            match fs::metadata(path) {
                Ok(m) => Self::observe(
                    &mut self.file,
                    FileState::of(&m),
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

/// The pid in a `<pid>:<host>` lock file, if the host is this one.
fn local_pid(lock_path: &Path) -> Option<u32> {
    let content = fs::read_to_string(lock_path).ok()?;
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
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
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

    #[test]
    fn lock_excludes_and_releases() {
        let dir = TempDir::new();
        let file = dir.path().join("dovecot-uidlist");
        let lock_path = dir.path().join("dovecot-uidlist.lock");
        let lock = DotLock::acquire(&file, Duration::from_secs(1), Duration::from_secs(120))
            .unwrap()
            .expect("free lock");
        let content = fs::read_to_string(&lock_path).unwrap();
        assert_eq!(
            content,
            format!("{}:{}", std::process::id(), crate::filename::hostname())
        );
        let busy =
            DotLock::acquire(&file, Duration::from_millis(200), Duration::from_secs(120)).unwrap();
        assert!(
            busy.is_none(),
            "a held lock is not taken twice in one process"
        );
        drop(lock);
        assert!(!lock_path.exists());
        assert!(
            DotLock::acquire(&file, Duration::from_secs(1), Duration::from_secs(120))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn lock_of_a_dead_local_process_is_overridden() {
        let dir = TempDir::new();
        let file = dir.path().join("f");
        let lock_path = dir.path().join("f.lock");
        // pid_max is at most 2^22 on Linux, so this pid does not exist.
        fs::write(
            &lock_path,
            format!("99999999:{}", crate::filename::hostname()),
        )
        .unwrap();
        set_mtime(&lock_path, 10);
        let lock =
            DotLock::acquire(&file, Duration::from_secs(2), Duration::from_secs(120)).unwrap();
        assert!(lock.is_some(), "a dead holder's lock is overridden");
    }

    #[test]
    fn lock_of_another_host_waits_for_the_stale_timeout() {
        let dir = TempDir::new();
        let file = dir.path().join("f");
        let lock_path = dir.path().join("f.lock");
        fs::write(&lock_path, "1:some-other-host").unwrap();
        let busy =
            DotLock::acquire(&file, Duration::from_millis(300), Duration::from_secs(120)).unwrap();
        assert!(busy.is_none(), "a fresh foreign lock is respected");
        // Old enough (its ctime is now, so use a short stale timeout).
        let lock = DotLock::acquire(&file, Duration::from_secs(4), Duration::from_secs(1)).unwrap();
        assert!(lock.is_some(), "an unchanged foreign lock goes stale");
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
