//! Keeping the loaded contents current: lookups stat the file at most once
//! per reload interval and re-read it when its inode, size, mtime or ctime
//! changed; a file that cannot be read leaves the previous contents in use.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::parse::{Users, parse};
use crate::{DEFAULT_RELOAD_INTERVAL, Inner};

pub(crate) struct State {
    users: Arc<Users>,
    pub(crate) reload_interval: Duration,
    stamp: Stamp,
    checked: Instant,
    /// Set while the file cannot be read, so that the failure is logged
    /// once rather than on every check.
    failing: bool,
}

/// What identifies one version of the file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl State {
    /// The contents just read from the file with this stamp.
    pub(crate) fn new(users: Arc<Users>, stamp: Stamp) -> Self {
        State {
            users,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            stamp,
            checked: Instant::now(),
            failing: false,
        }
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The loaded contents, without looking at the file.
    pub(crate) fn loaded(&self) -> Arc<Users> {
        self.lock().users.clone()
    }

    /// The loaded contents if the file need not be checked yet.
    pub(crate) fn fresh(&self) -> Option<Arc<Users>> {
        let state = self.lock();
        (state.checked.elapsed() < state.reload_interval).then(|| state.users.clone())
    }

    /// The current contents, re-reading the file if it changed. Blocking.
    pub(crate) fn current(&self) -> Arc<Users> {
        let mut state = self.lock();
        if state.checked.elapsed() < state.reload_interval {
            return state.users.clone();
        }
        state.checked = Instant::now();
        let changed = std::fs::metadata(&self.path).map(|m| Stamp::of(&m) != state.stamp);
        let result = match changed {
            Ok(false) => Ok(None),
            Ok(true) => read(&self.path).map(Some),
            Err(e) => Err(e),
        };
        match result {
            Ok(None) => {}
            Ok(Some((stamp, bytes))) => {
                let users = parse(&self.path, &bytes, self.hashing.limits());
                info!(file = %self.path.display(), users = users.map.len(), "passwd-file reloaded");
                state.users = Arc::new(users);
                state.stamp = stamp;
                state.failing = false;
            }
            Err(error) => {
                if !state.failing {
                    warn!(
                        file = %self.path.display(),
                        %error,
                        "passwd-file cannot be read; keeping the previous contents"
                    );
                }
                state.failing = true;
            }
        }
        state.users.clone()
    }
}

pub(crate) fn read(path: &Path) -> io::Result<(Stamp, Vec<u8>)> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok((Stamp::of(&meta), bytes))
}
