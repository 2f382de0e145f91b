//! Tenants' user directories: the `Directory` seam, the password schemes
//! directories share, the hashing pool they check passwords in, and
//! Dovecot's `allow_nets`; `MemoryDirectory`, the in-memory reference
//! directory; and the conformance kit every directory runs (`conformance`
//! feature). The directories themselves are backends:
//! `directory-passwd-file`, `directory-sql`, and `backend-postgres` for
//! PostgreSQL.

use std::net::IpAddr;

use async_trait::async_trait;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod hashing;
pub mod memory;
pub mod nets;
pub mod scheme;

pub use hashing::{HashPool, HashPoolConfig, Hashing};
pub use memory::{MemoryDirectory, MemoryUser};

/// A user the directory vouched for.
///
/// There is no per-user session cap: a mailbox has one session at a time
/// (RFC 1939's exclusive lock), so a cap above 1 could not be honoured and
/// 1 is what every user has. `popgate_max_sessions=` in a passwd-file is
/// ignored with a warning, and the PostgreSQL `max_sessions` column is
/// unused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Per-user minimum seconds between logins (RFC 2449 LOGIN-DELAY).
    pub login_delay: Option<u32>,
    /// The mailbox this login opens, when the directory says it is not the
    /// login's own: `local@domain`, or a bare `local` in the login's domain
    /// (Dovecot's `user` field, for an alias that logs in to another
    /// mailbox). It must be a valid name of the login's tenant, or the login
    /// is refused; it never reaches another tenant.
    pub mailbox: Option<String>,
    /// Where this user's mail is, when the directory says (Dovecot's userdb
    /// `mail`): for a Maildir tenant `maildir:/var/vmail/d/u/Maildir` or a
    /// bare path, confined to the tenant's Maildir root by the store, or
    /// the login is refused with `[SYS/TEMP]`. Stores without paths
    /// (PostgreSQL, S3) ignore it.
    pub location: Option<String>,
}

/// A directory failure that is not "wrong password": the backend is down or
/// its data unreadable. POP3 answers `-ERR [SYS/TEMP]`.
#[derive(Debug, thiserror::Error)]
#[error("directory unavailable: {0}")]
pub struct AuthError(pub String);

/// Why a directory gives no list of its users.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The directory cannot be listed: why, and the setting that would
    /// make it listable, if there is one.
    #[error("{0}")]
    Unsupported(String),
    /// The directory's backend failed.
    #[error(transparent)]
    Unavailable(#[from] AuthError),
}

/// Who is logging in: the canonical (lower-case) local part and domain.
/// `domain` is empty for a bare user name on a tenant without domains.
#[derive(Clone, Copy, Debug)]
pub struct Login<'a> {
    pub local: &'a str,
    pub domain: &'a str,
    /// The client's address (after PROXY), checked against a user's
    /// `allow_nets`. `None`: no address (matches only `local`).
    pub client: Option<IpAddr>,
}

impl<'a> Login<'a> {
    /// A login without a client address.
    pub fn new(local: &'a str, domain: &'a str) -> Self {
        Login {
            local,
            domain,
            client: None,
        }
    }

    /// The same login from `client`.
    #[must_use]
    pub fn with_client(self, client: IpAddr) -> Self {
        Login {
            client: Some(client),
            ..self
        }
    }

    /// A login that no directory has: the empty name.
    const NOBODY: Login<'static> = Login {
        local: "",
        domain: "",
        client: None,
    };
}

/// A tenant's user directory.
#[async_trait]
pub trait Directory: Send + Sync {
    /// A short name for logs and metrics: `passwd-file`, `postgres`.
    fn kind(&self) -> &'static str;

    /// Checks a password. `Ok(Some(_))` when it matches; `Ok(None)` when the
    /// user is unknown, disabled, or the password wrong. Those three must be
    /// indistinguishable to the caller, also by timing: an unknown user is
    /// checked against a dummy hash. Hashing runs off the async runtime.
    async fn verify(
        &self,
        login: Login<'_>,
        password: &[u8],
    ) -> Result<Option<UserInfo>, AuthError>;

    /// Spends on `password` what a failed login of this directory costs
    /// (the same lookup and the same dummy hash, in the same hashing slots),
    /// and throws the result away. For a login that belongs to no tenant (an
    /// unknown domain, an invalid local part), so that it fails in the time
    /// of a wrong password and timing does not tell which domains are
    /// served. Errors are those of a real check ([SYS/TEMP]).
    async fn verify_unknown(&self, password: &[u8]) -> Result<(), AuthError> {
        self.verify(Login::NOBODY, password).await.map(drop)
    }

    /// Whether APOP can work: it needs the plaintext secret.
    fn supports_apop(&self) -> bool {
        false
    }

    /// Checks an APOP digest: `digest` is the lower-case hex MD5 of
    /// `timestamp` followed by the user's plaintext password.
    async fn verify_apop(
        &self,
        login: Login<'_>,
        timestamp: &str,
        digest: &str,
    ) -> Result<Option<UserInfo>, AuthError> {
        let _ = (login, timestamp, digest);
        Ok(None)
    }

    /// The user without a password (Dovecot's userdb lookup): `Ok(None)`
    /// when the directory does not know the login; a disabled user is
    /// known. Delivery takes mail for a user that cannot log in now,
    /// refuses mail for a user the directory does not know, and puts it
    /// where a login opens: the [`UserInfo::mailbox`] and
    /// [`UserInfo::location`] are those `verify` gives.
    async fn find_user(&self, login: Login<'_>) -> Result<Option<UserInfo>, AuthError>;

    /// Every login the directory holds (`local@domain`, or a bare `local`
    /// that stands for every domain of the tenant), sorted, disabled users
    /// included: what `popgate migrate-mail --all` walks.
    /// [`ListError::Unsupported`] for a directory that cannot be listed (an
    /// LDAP tree, an HTTP hook, an SQL directory without `iterate_query`),
    /// saying what it lacks; the default.
    async fn list_logins(&self) -> Result<Vec<String>, ListError> {
        Err(ListError::Unsupported(format!(
            "a {} directory cannot list its users",
            self.kind()
        )))
    }

    /// Checks that the directory is reachable (readiness).
    async fn ping(&self) -> Result<(), AuthError> {
        Ok(())
    }
}
