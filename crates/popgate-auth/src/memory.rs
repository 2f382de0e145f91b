//! `MemoryDirectory`: the in-memory reference directory.
//!
//! It keeps every rule of [`Directory`] in a few lines each, as a model for
//! a new backend and as the directory of tests that need one: users with
//! any scheme [`crate::scheme`] takes, disabled users, Dovecot's
//! `allow_nets`, a per-user LOGIN-DELAY, a dummy hash for unknown users, and
//! an outage on cue ([`MemoryDirectory::set_reachable`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::hashing::Hashing;
use crate::nets::AllowNets;
use crate::scheme;
use crate::{AuthError, Directory, ListError, Login, UserInfo};

/// One user of a [`MemoryDirectory`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryUser {
    /// The password as a `{SCHEME}data` string.
    pub stored: String,
    /// A disabled user cannot log in, whatever the password; they exist.
    pub enabled: bool,
    /// Where the user may log in from; `None`: anywhere.
    pub allow_nets: Option<AllowNets>,
    /// Per-user minimum seconds between logins.
    pub login_delay: Option<u32>,
    /// The mailbox this login opens, if not its own ([`UserInfo::mailbox`]).
    pub mailbox: Option<String>,
    /// Where this user's mail is ([`UserInfo::location`]).
    pub location: Option<String>,
}

impl MemoryUser {
    /// An enabled user with the stored password `stored`, from anywhere.
    pub fn new(stored: impl Into<String>) -> Self {
        MemoryUser {
            stored: stored.into(),
            enabled: true,
            allow_nets: None,
            login_delay: None,
            mailbox: None,
            location: None,
        }
    }

    /// A login whose mail is at `location` (Dovecot's userdb `mail`).
    #[must_use]
    pub fn located(self, location: impl Into<String>) -> Self {
        MemoryUser {
            location: Some(location.into()),
            ..self
        }
    }

    /// A login that opens `mailbox` (an alias of another user).
    #[must_use]
    pub fn opening(self, mailbox: impl Into<String>) -> Self {
        MemoryUser {
            mailbox: Some(mailbox.into()),
            ..self
        }
    }

    #[must_use]
    pub fn disabled(self) -> Self {
        MemoryUser {
            enabled: false,
            ..self
        }
    }

    #[must_use]
    pub fn allow_nets(self, nets: AllowNets) -> Self {
        MemoryUser {
            allow_nets: Some(nets),
            ..self
        }
    }

    #[must_use]
    pub fn login_delay(self, seconds: u32) -> Self {
        MemoryUser {
            login_delay: Some(seconds),
            ..self
        }
    }

    /// Checks `password` (blocking: call it in a hashing slot). `None` for
    /// a wrong password, a disabled user (whose hash is checked all the
    /// same), a client outside `allow_nets`, and a stored string that cannot
    /// be checked (then `dummy` is, so that it costs a wrong password).
    fn check(
        &self,
        password: &[u8],
        client: Option<IpAddr>,
        limits: &scheme::CostLimits,
        dummy: Option<&str>,
    ) -> Option<UserInfo> {
        let matched = match scheme::verify_within(&self.stored, password, limits) {
            Ok(matched) => matched,
            Err(_) => {
                check_dummy(dummy, password, limits);
                false
            }
        };
        let admitted = self.allow_nets.as_ref().is_none_or(|n| n.admits(client));
        (matched && self.enabled && admitted).then(|| self.info())
    }

    /// What the directory says of this user once vouched for.
    fn info(&self) -> UserInfo {
        UserInfo {
            login_delay: self.login_delay,
            mailbox: self.mailbox.clone(),
            location: self.location.clone(),
        }
    }
}

/// A directory held in memory. Logins are `local@domain` or a bare `local`
/// (which serves every domain, as in a passwd-file), compared in lower case.
pub struct MemoryDirectory {
    hashing: Hashing,
    users: Mutex<Users>,
    reachable: AtomicBool,
}

#[derive(Default)]
struct Users {
    map: HashMap<String, Arc<MemoryUser>>,
    /// An enabled user's stored string of the most common cost class,
    /// checked for unknown users so that they cost what a wrong password does.
    dummy: Option<Arc<str>>,
}

impl MemoryDirectory {
    /// An empty directory hashing in a pool of its own.
    pub fn new() -> Self {
        MemoryDirectory::with_hashing(Hashing::standalone())
    }

    /// An empty directory hashing in `hashing`'s slots, within its caps.
    pub fn with_hashing(hashing: Hashing) -> Self {
        MemoryDirectory {
            hashing,
            users: Mutex::new(Users::default()),
            reachable: AtomicBool::new(true),
        }
    }

    /// Adds or replaces the user `login`.
    pub fn insert(&self, login: &str, user: MemoryUser) {
        let mut users = self.lock();
        users.map.insert(login.to_lowercase(), Arc::new(user));
        users.dummy = self.dummy_of(&users.map);
    }

    /// Removes the user `login`; whether there was one.
    pub fn remove(&self, login: &str) -> bool {
        let mut users = self.lock();
        let removed = users.map.remove(&login.to_lowercase()).is_some();
        users.dummy = self.dummy_of(&users.map);
        removed
    }

    /// Makes the directory fail every call with an [`AuthError`] (`false`),
    /// as a database that went away does, or work again (`true`).
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dummy_of(&self, map: &HashMap<String, Arc<MemoryUser>>) -> Option<Arc<str>> {
        let enabled = map
            .values()
            .filter(|u| u.enabled)
            .map(|u| u.stored.as_str());
        scheme::most_common_class(enabled, self.hashing.limits()).map(Arc::from)
    }

    fn up(&self) -> Result<(), AuthError> {
        match self.reachable.load(Ordering::Relaxed) {
            true => Ok(()),
            false => Err(AuthError("memory directory: unreachable (on cue)".into())),
        }
    }

    /// The user of `login` (full login first, then the bare local part),
    /// and the dummy.
    fn lookup(&self, login: Login<'_>) -> (Option<Arc<MemoryUser>>, Option<Arc<str>>) {
        let users = self.lock();
        let local = login.local.to_lowercase();
        let full =
            (!login.domain.is_empty()).then(|| format!("{local}@{}", login.domain.to_lowercase()));
        let user = full
            .into_iter()
            .chain(std::iter::once(local))
            .find_map(|key| users.map.get(&key).cloned());
        (user, users.dummy.clone())
    }
}

/// Spends on `password` what checking the dummy costs; the result is unused.
fn check_dummy(dummy: Option<&str>, password: &[u8], limits: &scheme::CostLimits) {
    if let Some(dummy) = dummy {
        let _ = scheme::verify_within(dummy, password, limits);
    }
}

impl Default for MemoryDirectory {
    fn default() -> Self {
        MemoryDirectory::new()
    }
}

impl std::fmt::Debug for MemoryDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDirectory")
            .field("users", &self.lock().map.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn list_logins(&self) -> Result<Vec<String>, ListError> {
        self.up()?;
        let mut logins: Vec<String> = self.lock().map.keys().cloned().collect();
        logins.sort();
        Ok(logins)
    }

    async fn verify(
        &self,
        login: Login<'_>,
        password: &[u8],
    ) -> Result<Option<UserInfo>, AuthError> {
        self.up()?;
        let (user, dummy) = self.lookup(login);
        let limits = *self.hashing.limits();
        let client = login.client;
        let password = password.to_vec();
        self.hashing
            .run(move || match user {
                Some(user) => user.check(&password, client, &limits, dummy.as_deref()),
                None => {
                    check_dummy(dummy.as_deref(), &password, &limits);
                    None
                }
            })
            .await
    }

    async fn find_user(&self, login: Login<'_>) -> Result<Option<UserInfo>, AuthError> {
        self.up()?;
        Ok(self.lookup(login).0.map(|u| u.info()))
    }

    async fn ping(&self) -> Result<(), AuthError> {
        self.up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, Fixture, KitUser};

    struct Memory;

    #[async_trait]
    impl Fixture for Memory {
        async fn directory(&mut self, users: &[KitUser], hashing: Hashing) -> Arc<dyn Directory> {
            let dir = MemoryDirectory::with_hashing(hashing);
            for u in users {
                let mut user = MemoryUser::new(&u.stored);
                user.enabled = u.enabled;
                user.login_delay = u.login_delay;
                user.allow_nets = u.allow_nets.as_deref().map(|n| AllowNets::parse(n).0);
                dir.insert(&u.login, user);
            }
            Arc::new(dir)
        }

        async fn unreachable(&mut self, hashing: Hashing) -> Option<Arc<dyn Directory>> {
            let dir = MemoryDirectory::with_hashing(hashing);
            dir.insert("bob@kit.example", MemoryUser::new("{PLAIN}pw"));
            dir.set_reachable(false);
            Some(Arc::new(dir))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_directory_passes_the_kit() {
        conformance::run(&mut Memory).await;
    }

    #[tokio::test]
    async fn bare_names_serve_every_domain_and_the_full_login_wins() {
        let dir = MemoryDirectory::new();
        dir.insert("Frank", MemoryUser::new("{PLAIN}bare"));
        let frank = Login::new("frank", "a.example");
        assert!(dir.verify(frank, b"bare").await.unwrap().is_some());
        dir.insert("frank@a.example", MemoryUser::new("{PLAIN}full"));
        assert!(dir.verify(frank, b"bare").await.unwrap().is_none());
        assert!(dir.verify(frank, b"full").await.unwrap().is_some());
        let elsewhere = Login::new("frank", "b.example");
        assert!(dir.verify(elsewhere, b"bare").await.unwrap().is_some());
        assert!(dir.remove("frank"));
        assert!(dir.find_user(elsewhere).await.unwrap().is_none());
        // Back after an outage.
        dir.set_reachable(false);
        assert!(dir.verify(frank, b"full").await.is_err());
        dir.set_reachable(true);
        assert!(dir.verify(frank, b"full").await.unwrap().is_some());
    }
}
