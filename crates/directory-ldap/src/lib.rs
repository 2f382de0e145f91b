//! An LDAP tree as a [`Directory`], in the spirit of Dovecot's
//! `passdb ldap`.
//!
//! A login is found with `user_filter` below `base_dn` (subtree), searched
//! on a shared service connection bound as `bind_dn` (or anonymous). The
//! login's parts are escaped before they go into the filter (RFC 4515), so
//! a login such as `*)(uid=*` matches only itself. Then either:
//! - the password attribute (`userPassword`) is read and checked in the
//!   hashing pool with [`popgate_auth::scheme`], the one implementation
//!   of schemes every directory shares: `{SSHA}`, `{SHA}`, `{SSHA256}`,
//!   `{SSHA512}`, `{SMD5}`, `{MD5}`, `{ARGON2}`, `{CRYPT}` `$id$` strings,
//!   `{ARGON2ID}`, `{BLF-CRYPT}`, ...; a multi-valued attribute matches
//!   when one value does; or
//! - with `auth_bind`, the server is asked to bind as the entry's DN with
//!   the password (Dovecot's `auth_bind = yes`), on a pool of connections
//!   kept for user binds. An empty password is refused before anything is
//!   sent (an empty simple bind is an anonymous bind, which succeeds).
//!
//! A login that matches no entry costs a dummy check (the last real
//! password's hash, or a bind to a DN that does not exist), one that
//! matches two or more entries fails with a warning. An unreachable,
//! slow (beyond `timeout`) or refusing server is an [`AuthError`]
//! (`[SYS/TEMP]`), never a wrong password. Nothing logged contains a
//! password.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use ldap3::{Scope, SearchEntry};
use popgate_auth::hashing::Hashing;
use popgate_auth::{AuthError, Directory, Login, UserInfo, scheme};
use tracing::warn;

mod config;
mod conn;
mod entry;

pub use config::{DEFAULT_USER_FILTER, LdapConfig, UserAttributes};
use conn::{BindPool, Service};

/// An argon2id hash with popgate's production parameters (m=19 MiB, t=2),
/// checked for unknown logins until a real user's hash has been seen.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$cG9wZ2F0ZS1kdW1teQ$JwYpVl5rRzkLq6uF6Ql7I1g2PqHhIL8Pl7W1MbIhCzM";

/// A tenant's users in an LDAP directory.
pub struct LdapDirectory {
    config: LdapConfig,
    service: Service,
    binds: BindPool,
    hashing: Hashing,
    /// The hash an unknown login is checked against: the last real one.
    dummy: Mutex<Arc<str>>,
}

impl LdapDirectory {
    /// Checks the settings; connects on first use, so that popgate starts
    /// while the server is down (its logins answer `[SYS/TEMP]` meanwhile).
    /// An error names the setting.
    pub fn new(config: LdapConfig, hashing: Hashing) -> Result<Self, (&'static str, String)> {
        config.validate()?;
        let connector = conn::Connector::new(&config).map_err(|e| ("tls_ca_file", e))?;
        Ok(LdapDirectory {
            service: Service::new(connector, &config),
            binds: BindPool::new(),
            hashing,
            dummy: Mutex::new(DUMMY_HASH.into()),
            config,
        })
    }

    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    /// The entries `login` finds: at most two, which is enough to tell
    /// "one" from "more than one".
    async fn find(&self, login: Login<'_>, attrs: &[&str]) -> Result<Vec<SearchEntry>, AuthError> {
        let user = match login.domain {
            "" => login.local.to_owned(),
            domain => format!("{}@{domain}", login.local),
        };
        let filter = self.config.filter_for(&user, login.local, login.domain);
        self.service
            .search(&self.config.base_dn, Scope::Subtree, &filter, attrs, 2)
            .await
    }

    /// The one entry of a search, or `None` (with a warning for several).
    fn single(entries: Vec<SearchEntry>) -> Option<SearchEntry> {
        if entries.len() > 1 {
            let dns: Vec<&str> = entries.iter().map(|e| e.dn.as_str()).collect();
            warn!(
                entries = ?dns,
                "LDAP: the login matches more than one entry; refused (make user_filter unique)"
            );
            return None;
        }
        entries.into_iter().next()
    }

    fn dummy(&self) -> Arc<str> {
        self.dummy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the password attribute and checks it in the hashing pool.
    async fn verify_attribute(
        &self,
        login: Login<'_>,
        password: &[u8],
    ) -> Result<Option<UserInfo>, AuthError> {
        let attribute = self.config.password_attribute.as_str();
        let wanted = entry::wanted(&self.config.attributes, attribute);
        let entry = Self::single(self.find(login, &wanted).await?);
        let stored = entry
            .as_ref()
            .map(|e| entry::values(e, attribute))
            .unwrap_or_default();
        if let Some(e) = entry.as_ref().filter(|_| stored.is_empty()) {
            warn!(dn = %e.dn, attribute, "LDAP: the entry has no password attribute that the service bind can read; refused");
        }
        if let Some(first) = stored.first() {
            *self.dummy.lock().unwrap_or_else(PoisonError::into_inner) = first.as_str().into();
        }
        let dn = entry.as_ref().map(|e| e.dn.clone()).unwrap_or_default();
        let dummy = self.dummy();
        let limits = *self.hashing.limits();
        let password = password.to_vec();
        let matched = self
            .hashing
            .run(move || {
                if stored.is_empty() {
                    let _ = scheme::verify_within(&dummy, &password, &limits);
                    return false;
                }
                let mut matched = false;
                for value in &stored {
                    match scheme::verify_within(value, &password, &limits) {
                        Ok(true) => matched = true,
                        Ok(false) => {}
                        Err(error) => {
                            warn!(dn, %error, "LDAP: cannot check password");
                        }
                    }
                }
                matched
            })
            .await?;
        Ok(entry
            .filter(|_| matched)
            .and_then(|e| entry::admit(&e, &self.config.attributes, login.client)))
    }

    /// Asks the server to bind as the login's entry.
    async fn verify_bind(
        &self,
        login: Login<'_>,
        password: &[u8],
    ) -> Result<Option<UserInfo>, AuthError> {
        // ldap3 takes the password as text; an empty one would bind
        // anonymously.
        let Some(password) = std::str::from_utf8(password).ok().filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let connector = self.service.connector();
        let wanted = entry::wanted(&self.config.attributes, "1.1");
        match Self::single(self.find(login, &wanted).await?) {
            Some(found) => {
                let ok = self.binds.bind(connector, &found.dn, password).await?;
                Ok(ok
                    .then(|| entry::admit(&found, &self.config.attributes, login.client))
                    .flatten())
            }
            None => {
                // The round trip a real bind costs; the DN does not exist.
                let nobody = format!("cn=popgate-no-such-user,{}", self.config.base_dn);
                self.binds.bind(connector, &nobody, password).await?;
                Ok(None)
            }
        }
    }
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Directory for LdapDirectory {
    fn kind(&self) -> &'static str {
        "ldap"
    }

    async fn verify(
        &self,
        login: Login<'_>,
        password: &[u8],
    ) -> Result<Option<UserInfo>, AuthError> {
        if self.config.auth_bind {
            self.verify_bind(login, password).await
        } else {
            self.verify_attribute(login, password).await
        }
    }

    async fn find_user(&self, login: Login<'_>) -> Result<Option<UserInfo>, AuthError> {
        let attributes = &self.config.attributes;
        let wanted: Vec<&str> = [&attributes.user, &attributes.location]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let wanted = if wanted.is_empty() {
            vec!["1.1"]
        } else {
            wanted
        };
        let entries = self.find(login, &wanted).await?;
        Ok(entries.first().map(|e| entry::directed(e, attributes)))
    }

    /// Reads `base_dn` itself on the service connection.
    async fn ping(&self) -> Result<(), AuthError> {
        self.service.read_base(&self.config.base_dn).await
    }
}

#[cfg(test)]
mod tests {
    use popgate_auth::scheme::{self, CostLimits};

    #[test]
    fn the_dummy_hash_is_checked_not_refused() {
        assert!(scheme::check_cost(super::DUMMY_HASH, &CostLimits::DEFAULT).is_ok());
        assert!(!scheme::verify(super::DUMMY_HASH, b"").unwrap());
        assert_eq!(
            scheme::cost_class(super::DUMMY_HASH).unwrap(),
            scheme::cost_class(&scheme::hash(scheme::Scheme::Argon2id, b"x").unwrap()).unwrap(),
            "the dummy costs what a freshly made ARGON2ID hash costs"
        );
    }
}
