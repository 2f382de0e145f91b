//! Dovecot's passwd-file as a [`Directory`].
//!
//! One line per user, `user:password:uid:gid:gecos:home:shell:extra_fields`,
//! of which only the first two columns are required. Blank lines and lines
//! starting with `#` are ignored. `user` is `local@domain` or a bare
//! `local`; a login `local@domain` is looked up as `local@domain` first,
//! then as `local` (each tenant has its own file, so a bare name belongs to
//! that tenant). User names compare in lower case. `password` is a
//! `{SCHEME}data` string ([`popgate_auth::scheme`]); an empty one disables the user.
//!
//! The 8th column holds space-separated `key=value` extra fields, Dovecot
//! style. popgate reads:
//! - `nopassword` and `nologin`: the user is disabled. (In Dovecot,
//!   `nopassword` lets any password in; popgate refuses to run accounts
//!   without a password, and `nologin` is Dovecot's way to refuse a login.)
//! - `allow_nets=NETS`: the user logs in only from a client address (after
//!   PROXY) in one of the networks ([`popgate_auth::nets`]); from elsewhere the
//!   login fails like a wrong password (logged at info). An entry that does
//!   not parse is warned about and matches nothing.
//! - `allow_real_nets`: popgate does not pass the proxy's own address to
//!   directories, so the user is disabled (fail closed) and a warning says
//!   so.
//! - `popgate_login_delay=N`: [`UserInfo`].
//! - `popgate_max_sessions=N`: recognised and ignored (one session per
//!   mailbox at a time, see [`UserInfo`]), with one warning per load.
//!
//! - `userdb_mail=LOCATION` (or `mail=`, as in a userdb file): the user's
//!   Maildir ([`UserInfo::location`]), confined to the tenant's root.
//!
//! Other fields (other `userdb_*`, `quota_rule`, ...) are ignored. A malformed
//! line is skipped with a warning naming the file and line number (never
//! the password); when a user appears twice the first line wins. A
//! password hash above the cost caps ([`popgate_auth::scheme::CostLimits`]) is
//! warned about at load with its line; that user's logins fail like a wrong
//! password, and the hash is never computed.
//!
//! The file is re-read when it changes: lookups stat it at most once per
//! second and compare inode, size, mtime and ctime. If the new file cannot
//! be read, the previous contents stay in use and a warning is logged.

mod check;
mod parse;
mod reload;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use popgate_auth::hashing::Hashing;
use popgate_auth::{AuthError, Directory, ListError, Login, UserInfo};

use crate::parse::{Users, parse};
use crate::reload::{State, read};

/// How often lookups check the file for changes, by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A passwd-file could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read passwd-file {}: {error}", path.display())]
pub struct PasswdFileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub error: io::Error,
}

/// A tenant's user directory in a Dovecot passwd-file.
pub struct PasswdFile {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    hashing: Hashing,
    state: Mutex<State>,
}

impl PasswdFile {
    /// Reads and parses the file, to check passwords in a hashing pool of
    /// its own with the default cost caps (for tools and tests; a server
    /// uses [`PasswdFile::open_with`]). Fails when it is missing or
    /// unreadable; malformed lines are only skipped (see
    /// [`PasswdFile::skipped_lines`]).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, PasswdFileError> {
        PasswdFile::open_with(path, Hashing::standalone())
    }

    /// Reads and parses the file; passwords are checked in `hashing`'s
    /// slots, against its cost caps.
    pub fn open_with(path: impl Into<PathBuf>, hashing: Hashing) -> Result<Self, PasswdFileError> {
        let path = path.into();
        let (stamp, bytes) = read(&path).map_err(|error| PasswdFileError {
            path: path.clone(),
            error,
        })?;
        let users = Arc::new(parse(&path, &bytes, hashing.limits()));
        Ok(PasswdFile {
            inner: Arc::new(Inner {
                path,
                hashing,
                state: Mutex::new(State::new(users, stamp)),
            }),
        })
    }

    /// Sets how often lookups check the file for changes (default 1 s).
    #[must_use]
    pub fn with_reload_interval(self, interval: Duration) -> Self {
        self.inner.lock().reload_interval = interval;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Users in the currently loaded contents.
    pub fn user_count(&self) -> usize {
        self.inner.loaded().map.len()
    }

    /// Lines skipped as malformed in the currently loaded contents.
    pub fn skipped_lines(&self) -> usize {
        self.inner.loaded().skipped
    }

    /// What loading the current contents warned about (also logged), each
    /// as `file:line: user: problem`: malformed lines, schemes that cannot
    /// be checked, hashes above the cost caps, bad `allow_nets`.
    pub fn warnings(&self) -> Vec<String> {
        self.inner.loaded().warnings.clone()
    }

    /// The current contents. Checking the file (a stat, and a read when it
    /// changed) runs on the blocking pool, outside the hashing slots, so a
    /// slow file system cannot hold up other tenants' logins.
    async fn users(&self) -> Result<Arc<Users>, AuthError> {
        if let Some(users) = self.inner.fresh() {
            return Ok(users);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.current())
            .await
            .map_err(|e| AuthError(format!("passwd-file check aborted: {e}")))
    }
}

impl PasswdFile {
    /// The file's entry for this user, as [`Directory::find_user`].
    async fn find(&self, login: Login<'_>) -> Result<Option<UserInfo>, AuthError> {
        let users = self.users().await?;
        Ok(users
            .lookup(login.local, login.domain)
            .map(|(_, e)| e.info.clone()))
    }
}

impl fmt::Debug for PasswdFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswdFile")
            .field("path", &self.inner.path)
            .field("users", &self.user_count())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Directory for PasswdFile {
    fn kind(&self) -> &'static str {
        "passwd-file"
    }

    async fn find_user(&self, login: Login<'_>) -> Result<Option<UserInfo>, AuthError> {
        self.find(login).await
    }

    async fn list_logins(&self) -> Result<Vec<String>, ListError> {
        let users = self.users().await?;
        let mut logins: Vec<String> = users.map.keys().cloned().collect();
        logins.sort();
        Ok(logins)
    }

    async fn verify(
        &self,
        login: Login<'_>,
        password: &[u8],
    ) -> Result<Option<UserInfo>, AuthError> {
        let users = self.users().await?;
        let inner = self.inner.clone();
        let (local, domain) = (login.local.to_owned(), login.domain.to_owned());
        let client = login.client;
        let password = password.to_vec();
        self.inner
            .hashing
            .run(move || inner.verify(&users, &local, &domain, client, &password))
            .await
    }

    /// True when the loaded file has at least one enabled PLAIN user. Does
    /// not look at the file itself; lookups keep the contents current.
    fn supports_apop(&self) -> bool {
        self.inner.loaded().plain > 0
    }

    async fn verify_apop(
        &self,
        login: Login<'_>,
        timestamp: &str,
        digest: &str,
    ) -> Result<Option<UserInfo>, AuthError> {
        // One MD5: cheap enough for the async runtime.
        let users = self.users().await?;
        Ok(users.verify_apop(&self.inner.path, login, timestamp, digest))
    }
}
