//! Tenants' user directories: the `Directory` seam, Dovecot's passwd-file,
//! and the password schemes they share.

use async_trait::async_trait;

pub mod passwd_file;
pub mod postgres;
pub mod scheme;

pub use passwd_file::PasswdFile;
pub use postgres::PgDirectory;

/// A user the directory vouched for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Per-user override of the tenant's concurrent-session cap.
    pub max_sessions: Option<u32>,
    /// Per-user minimum seconds between logins (RFC 2449 LOGIN-DELAY).
    pub login_delay: Option<u32>,
}

/// A directory failure that is not "wrong password": the backend is down or
/// its data unreadable. POP3 answers `-ERR [SYS/TEMP]`.
#[derive(Debug, thiserror::Error)]
#[error("directory unavailable: {0}")]
pub struct AuthError(pub String);

/// Who is logging in: the canonical (lower-case) local part and domain.
/// `domain` is empty for a bare user name on a tenant without domains.
#[derive(Clone, Copy, Debug)]
pub struct Login<'a> {
    pub local: &'a str,
    pub domain: &'a str,
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

    /// Whether the directory has this user, disabled or not (Dovecot's
    /// userdb lookup): delivery takes mail for a user that cannot log in
    /// now, and refuses mail for a user the directory does not know.
    async fn user_exists(&self, login: Login<'_>) -> Result<bool, AuthError>;

    /// Checks that the directory is reachable (readiness).
    async fn ping(&self) -> Result<(), AuthError> {
        Ok(())
    }
}
