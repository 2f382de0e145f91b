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
//! Other fields (`userdb_*`, `quota_rule`, ...) are ignored. A malformed
//! line is skipped with a warning naming the file and line number (never
//! the password); when a user appears twice the first line wins. A
//! password hash above the cost caps ([`popgate_auth::scheme::CostLimits`]) is
//! warned about at load with its line; that user's logins fail like a wrong
//! password, and the hash is never computed.
//!
//! The file is re-read when it changes: lookups stat it at most once per
//! second and compare inode, size, mtime and ctime. If the new file cannot
//! be read, the previous contents stay in use and a warning is logged.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use popgate_auth::hashing::Hashing;
use popgate_auth::nets::AllowNets;
use popgate_auth::scheme::{self, CostLimits, Scheme, SchemeError};
use popgate_auth::{AuthError, Directory, Login, UserInfo};

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

struct State {
    users: Arc<Users>,
    reload_interval: Duration,
    stamp: Stamp,
    checked: Instant,
    /// Set while the file cannot be read, so that the failure is logged
    /// once rather than on every check.
    failing: bool,
}

/// What identifies one version of the file.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
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

/// One parsed version of the file.
#[derive(Default)]
struct Users {
    map: HashMap<String, Entry>,
    /// A real entry's password of the most common cost class, checked (and
    /// the result ignored) for unknown users, so that they cost the same.
    dummy: Option<Box<str>>,
    /// Enabled users with a PLAIN password (the only ones APOP can check).
    plain: usize,
    skipped: usize,
    /// What the load warned about, as `file:line: user: problem`.
    warnings: Vec<String>,
}

struct Entry {
    stored: Box<str>,
    disabled: bool,
    info: UserInfo,
    /// `allow_nets`, when the line has it.
    allow_nets: Option<AllowNets>,
    /// Why the stored hash is above the cost caps; it is never verified.
    over_cap: Option<Box<str>>,
    /// Whether a login was refused for `over_cap` yet (it is logged once).
    warned: AtomicBool,
}

impl Entry {
    /// Whether `client` may log in as this user.
    fn admits(&self, client: Option<IpAddr>) -> bool {
        self.allow_nets.as_ref().is_none_or(|n| n.admits(client))
    }
}

impl Users {
    fn lookup(&self, local: &str, domain: &str) -> Option<(&str, &Entry)> {
        let local = local.to_lowercase();
        let full = (!domain.is_empty()).then(|| format!("{local}@{}", domain.to_lowercase()));
        full.into_iter()
            .chain(std::iter::once(local))
            .find_map(|key| self.map.get_key_value(&key))
            .map(|(k, e)| (k.as_str(), e))
    }

    /// Checks an APOP digest; only enabled PLAIN users can match.
    fn verify_apop(
        &self,
        path: &Path,
        login: Login<'_>,
        timestamp: &str,
        digest: &str,
    ) -> Option<UserInfo> {
        let found = self.lookup(login.local, login.domain);
        let user = found.map(|(u, _)| u);
        let found = found.map(|(_, e)| e);
        let plain = found.and_then(|e| match scheme::parse(&e.stored) {
            Ok((Scheme::Plain, secret)) => Some(secret),
            _ => None,
        });
        // Unknown and non-PLAIN users cost one MD5 as well.
        let expected = apop_digest(timestamp, plain.unwrap_or("").as_bytes());
        let given = digest.trim().to_ascii_lowercase();
        let matched: bool = expected.as_bytes().ct_eq(given.as_bytes()).into();
        let entry = found.filter(|e| plain.is_some() && !e.disabled)?;
        if matched && !entry.admits(login.client) {
            refused_by_nets(path, user.unwrap_or_default(), login.client);
            return None;
        }
        matched.then(|| entry.info.clone())
    }
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
                state: Mutex::new(State {
                    users,
                    reload_interval: DEFAULT_RELOAD_INTERVAL,
                    stamp,
                    checked: Instant::now(),
                    failing: false,
                }),
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
    /// Whether the file lists this user, as [`Directory::user_exists`].
    async fn has_user(&self, login: Login<'_>) -> Result<bool, AuthError> {
        let users = self.users().await?;
        Ok(users.lookup(login.local, login.domain).is_some())
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

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The loaded contents, without looking at the file.
    fn loaded(&self) -> Arc<Users> {
        self.lock().users.clone()
    }

    /// The loaded contents if the file need not be checked yet.
    fn fresh(&self) -> Option<Arc<Users>> {
        let state = self.lock();
        (state.checked.elapsed() < state.reload_interval).then(|| state.users.clone())
    }

    /// The current contents, re-reading the file if it changed. Blocking.
    fn current(&self) -> Arc<Users> {
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

    fn verify(
        &self,
        users: &Users,
        local: &str,
        domain: &str,
        client: Option<IpAddr>,
        password: &[u8],
    ) -> Option<UserInfo> {
        let limits = self.hashing.limits();
        // Unknown users, and users whose password cannot be checked, are
        // checked against the dummy: all failures cost about the same.
        let dummy = || {
            if let Some(dummy) = &users.dummy {
                let _ = scheme::verify_within(dummy, password, limits);
            }
            None
        };
        let Some((user, entry)) = users.lookup(local, domain) else {
            return dummy();
        };
        if let Some(reason) = &entry.over_cap {
            if !entry.warned.swap(true, Ordering::Relaxed) {
                warn!(file = %self.path.display(), user, reason = &**reason, "login refused: password hash above the cost cap (not hashed)");
            }
            return dummy();
        }
        match scheme::verify_within(&entry.stored, password, limits) {
            Ok(true) if !entry.disabled => {
                if !entry.admits(client) {
                    refused_by_nets(&self.path, user, client);
                    return None;
                }
                Some(entry.info.clone())
            }
            Ok(_) => None,
            Err(error) => {
                if !entry.stored.is_empty() {
                    warn!(file = %self.path.display(), user, %error, "cannot check password");
                }
                dummy()
            }
        }
    }
}

/// Logs a login with the right password from outside the user's allow_nets.
fn refused_by_nets(path: &Path, user: &str, client: Option<IpAddr>) {
    let client = client.map_or_else(|| "none".to_owned(), |c| c.to_string());
    info!(file = %path.display(), user, client, "login refused: the client address is not in the user's allow_nets");
}

/// The lower-case hex MD5 of `timestamp` followed by `secret` (RFC 1939).
fn apop_digest(timestamp: &str, secret: &[u8]) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret);
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path) -> io::Result<(Stamp, Vec<u8>)> {
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

/// Where a load's warnings go: the log, and [`Users::warnings`].
struct Notes<'a> {
    path: &'a Path,
    list: Vec<String>,
}

impl Notes<'_> {
    fn warn(&mut self, line: usize, user: Option<&str>, problem: &str) {
        let file = self.path.display();
        match user {
            Some(user) => {
                warn!(file = %file, line, user, "passwd-file: {problem}");
                self.list.push(format!("{file}:{line}: {user}: {problem}"));
            }
            None => {
                warn!(file = %file, line, "passwd-file: {problem}");
                self.list.push(format!("{file}:{line}: {problem}"));
            }
        }
    }
}

fn parse(path: &Path, bytes: &[u8], limits: &CostLimits) -> Users {
    let mut users = Users::default();
    let mut notes = Notes {
        path,
        list: Vec::new(),
    };
    // Lines with popgate_max_sessions: how many, and the first.
    let mut max_sessions: (usize, usize) = (0, 0);
    // cost class -> (users, first line, first user)
    let mut classes: HashMap<String, (usize, usize, String)> = HashMap::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = index + 1;
        let parsed = std::str::from_utf8(raw)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|line| {
                parse_line(&mut notes, lineno, line.strip_suffix('\r').unwrap_or(line))
            });
        let (user, mut entry, has_max_sessions) = match parsed {
            Ok(Some(parsed)) => parsed,
            Ok(None) => continue,
            Err(reason) => {
                notes.warn(lineno, None, &format!("skipping malformed line: {reason}"));
                users.skipped += 1;
                continue;
            }
        };
        if has_max_sessions {
            if max_sessions.0 == 0 {
                max_sessions.1 = lineno;
            }
            max_sessions.0 += 1;
        }
        if users.map.contains_key(&user) {
            notes.warn(
                lineno,
                Some(&user),
                "user listed again; the first line wins",
            );
            continue;
        }
        match scheme::cost_class(&entry.stored) {
            Ok(class) => match scheme::check_cost(&entry.stored, limits) {
                Err(error @ SchemeError::AboveCap { .. }) => {
                    notes.warn(
                        lineno,
                        Some(&user),
                        &format!("{error}; this user cannot log in (the hash is never computed)"),
                    );
                    entry.over_cap = Some(error.to_string().into());
                }
                _ => {
                    if class == "PLAIN" && !entry.disabled {
                        users.plain += 1;
                    }
                    classes.entry(class).or_insert((0, lineno, user.clone())).0 += 1;
                }
            },
            Err(_) if entry.stored.is_empty() => {}
            Err(error) => {
                notes.warn(
                    lineno,
                    Some(&user),
                    &format!("{error}; this user cannot log in"),
                );
            }
        }
        users.map.insert(user, entry);
    }
    if max_sessions.0 > 0 {
        let (count, first) = max_sessions;
        notes.warn(
            first,
            None,
            &format!(
                "popgate_max_sessions is ignored: a mailbox has one session at a time ({count} line(s) have it, the first is line {first})"
            ),
        );
    }
    users.warnings = notes.list;
    // The most common class; on a tie, the one seen first.
    let best = classes
        .into_values()
        .max_by_key(|(count, line, _)| (*count, std::cmp::Reverse(*line)));
    users.dummy = best
        .and_then(|(_, _, user)| users.map.get(&user))
        .map(|entry| entry.stored.clone());
    users
}

/// One line: `Ok(None)` for blank and comment lines, `Err(reason)` for a
/// malformed one. The reason never quotes the password column. The flag
/// says whether the line has `popgate_max_sessions`.
fn parse_line(
    notes: &mut Notes<'_>,
    lineno: usize,
    line: &str,
) -> Result<Option<(String, Entry, bool)>, String> {
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let mut columns = line.splitn(8, ':');
    let user = columns.next().unwrap_or_default();
    let Some(stored) = columns.next() else {
        return Err("no password column (expected user:password[:...])".into());
    };
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("user name contains white space".into());
    }
    if user.matches('@').count() > 1 || user.starts_with('@') || user.ends_with('@') {
        return Err("user name is not local or local@domain".into());
    }
    let user = user.to_lowercase();
    let extra = columns.nth(5).unwrap_or_default();

    let mut entry = Entry {
        stored: stored.into(),
        disabled: stored.is_empty(),
        info: UserInfo::default(),
        allow_nets: None,
        over_cap: None,
        warned: AtomicBool::new(false),
    };
    let mut max_sessions = false;
    for field in extra.split_whitespace() {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "nopassword" | "nologin" => entry.disabled = true,
            "allow_nets" => {
                let (nets, invalid) = AllowNets::parse(value);
                for bad in invalid {
                    notes.warn(
                        lineno,
                        Some(&user),
                        &format!("{bad}; it matches no address"),
                    );
                }
                if entry.allow_nets.is_some() {
                    notes.warn(lineno, Some(&user), "allow_nets given twice; user disabled");
                    entry.disabled = true;
                }
                entry.allow_nets = Some(nets);
            }
            "allow_real_nets" => {
                notes.warn(
                    lineno,
                    Some(&user),
                    &format!("{key} is not supported; user disabled"),
                );
                entry.disabled = true;
            }
            "popgate_max_sessions" => max_sessions = true,
            "popgate_login_delay" => match value.parse::<u32>() {
                Ok(n) => entry.info.login_delay = Some(n),
                Err(_) => {
                    notes.warn(
                        lineno,
                        Some(&user),
                        &format!("ignoring {key}: not a number"),
                    );
                }
            },
            _ => {}
        }
    }
    Ok(Some((user, entry, max_sessions)))
}

#[async_trait]
impl Directory for PasswdFile {
    fn kind(&self) -> &'static str {
        "passwd-file"
    }

    async fn user_exists(&self, login: Login<'_>) -> Result<bool, AuthError> {
        self.has_user(login).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_is_of_the_most_common_class() {
        let file = "\
a:{PLAIN}x
b:$2y$04$5D.aL.fV85YiD13oXmGByuH.V3eCTJWidNypC2058qMqJQ3PXvYDu
c:{BLF-CRYPT}$2y$04$V8gd8DOmgT7U9U2NY1s91.DtqA1jv..5X/UKdKoUaqncsrt5li2k6
d:{SHA512-CRYPT}$6$salt$hash
";
        let users = parse(Path::new("t"), file.as_bytes(), &CostLimits::DEFAULT);
        assert_eq!(users.map.len(), 4);
        assert_eq!(users.plain, 1);
        assert!(
            users
                .dummy
                .as_deref()
                .is_some_and(|d| d.starts_with("$2y$04$5D"))
        );
        assert!(
            parse(Path::new("t"), b"# nobody\n", &CostLimits::DEFAULT)
                .dummy
                .is_none()
        );
    }

    #[test]
    fn apop_digest_matches_rfc_1939() {
        // RFC 1939, section 7.
        let digest = apop_digest("<1896.697170952@dbc.mtview.ca.us>", b"tanstaaf");
        assert_eq!(digest, "c4c9334bac560ecc979e58001b3e22fb");
    }
}
