//! A tenant's users in PostgreSQL, as a [`Directory`].
//!
//! The `users` table (created by the migrations in `migrations/`) holds one
//! row per `(tenant, login)`: the password as a `{SCHEME}data` string in
//! any scheme [`popgate_auth::scheme::verify`] takes, an `enabled` flag, the
//! per-user override `login_delay` (NULL: the tenant's), and `allow_nets`
//! (NULL: anywhere; else Dovecot's syntax, [`popgate_auth::nets`]: a login with the
//! right password from another address fails like a wrong one). The
//! `location` column (NULL: the tenant's path template) is the user's
//! Maildir (Dovecot's userdb `mail`, [`UserInfo::location`]), confined to
//! the tenant's root by the store, for logins and deliveries alike. The
//! `max_sessions` column is unused: a mailbox has one session at a time
//! (see [`UserInfo`]); `popgate user add --max-sessions` still fills it.
//! A login `local@domain` is looked up as `local@domain` first, then as a
//! bare `local` (which then serves every domain of the tenant), like the
//! passwd-file. Logins are stored in lower case.
//!
//! Timing: an unknown user is checked against a dummy hash of the tenant's
//! most common cost class (sampled from the table at most once a minute,
//! whoever logs in), and a disabled user's password is checked like any
//! other, so that unknown, disabled and wrong-password logins cost the
//! same. Hashing runs in the [`Hashing`] slots the directory was given. A
//! stored hash above the cost caps is never computed: the login fails like
//! a wrong password (checked against the dummy), with one warning per user
//! and hash.
//!
//! The pool's connections must have the schema on their `search_path`
//! (the binary builds the pool from the `auth` section's settings).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use tracing::{info, warn};

use popgate_auth::hashing::Hashing;
use popgate_auth::nets::{AllowNets, InvalidNet};
use popgate_auth::scheme::{self, SchemeError};
use popgate_auth::{AuthError, Directory, ListError, Login, UserInfo};

/// How often the dummy hash for unknown users is re-sampled.
const DUMMY_REFRESH: Duration = Duration::from_secs(60);
/// How many users the dummy's cost class is sampled from.
const DUMMY_SAMPLE: i64 = 200;
/// How many users with a hash above the caps are remembered as warned.
const WARNED_MAX: usize = 10_000;

/// A tenant's user directory in PostgreSQL.
pub struct PgDirectory {
    pool: PgPool,
    tenant: String,
    hashing: Hashing,
    dummy: Mutex<Dummy>,
    /// `login` + hash of users whose hash above the caps was logged.
    warned: Mutex<HashSet<String>>,
}

#[derive(Default)]
struct Dummy {
    stored: Option<Arc<str>>,
    refreshed: Option<Instant>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    login: String,
    password: String,
    enabled: bool,
    login_delay: Option<i32>,
    allow_nets: Option<String>,
    location: Option<String>,
}

impl UserRow {
    /// What the row says of the user once vouched for.
    fn info(&self) -> UserInfo {
        UserInfo {
            login_delay: self.login_delay.and_then(|n| u32::try_from(n).ok()),
            mailbox: None,
            location: self.location.clone().filter(|l| !l.trim().is_empty()),
        }
    }
}

/// A user as `popgate user list` shows it: everything but the password.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserEntry {
    pub login: String,
    pub enabled: bool,
    pub login_delay: Option<i32>,
    pub allow_nets: Option<String>,
    pub location: Option<String>,
}

/// A user-management command failed.
#[derive(Debug, thiserror::Error)]
pub enum UserAdminError {
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("no user {0:?}")]
    NotFound(String),
    #[error("{0:?} is not a valid login (lower-case local or local@domain)")]
    InvalidLogin(String),
    #[error("{0}")]
    InvalidNets(#[from] InvalidNet),
    #[error("database: {0}")]
    Database(String),
}

fn db(e: sqlx::Error) -> UserAdminError {
    UserAdminError::Database(e.to_string())
}

/// A stored login: lower case, no white space or control characters, at
/// most one `@` with something on both sides.
fn check_login(login: &str) -> Result<(), UserAdminError> {
    let bad = login.is_empty()
        || login != login.to_lowercase()
        || login.chars().any(|c| c.is_whitespace() || c.is_control())
        || login.matches('@').count() > 1
        || login.starts_with('@')
        || login.ends_with('@');
    if bad {
        Err(UserAdminError::InvalidLogin(login.into()))
    } else {
        Ok(())
    }
}

impl PgDirectory {
    /// The users of `tenant`, in the schema on the pool's `search_path`;
    /// passwords are checked in a hashing pool of its own with the default
    /// caps (for tools and tests: a server uses [`PgDirectory::with_hashing`]).
    pub fn new(pool: PgPool, tenant: impl Into<String>) -> Self {
        PgDirectory {
            pool,
            tenant: tenant.into(),
            hashing: Hashing::standalone(),
            dummy: Mutex::new(Dummy::default()),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// Checks passwords in `hashing`'s slots, against its cost caps.
    #[must_use]
    pub fn with_hashing(mut self, hashing: Hashing) -> Self {
        self.hashing = hashing;
        self
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Adds a user; `stored` is a `{SCHEME}data` string. `max_sessions`
    /// goes to the unused column of that name.
    pub async fn add_user(
        &self,
        login: &str,
        stored: &str,
        login_delay: Option<u32>,
        max_sessions: Option<u32>,
    ) -> Result<(), UserAdminError> {
        check_login(login)?;
        let to_i32 = |v: Option<u32>| v.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let inserted = sqlx::query(
            "INSERT INTO users (tenant, login, password, login_delay, max_sessions) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, login) DO NOTHING",
        )
        .bind(&self.tenant)
        .bind(login)
        .bind(stored)
        .bind(to_i32(login_delay))
        .bind(to_i32(max_sessions))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 0 {
            return Err(UserAdminError::Exists(login.into()));
        }
        Ok(())
    }

    /// Replaces a user's password.
    pub async fn set_password(&self, login: &str, stored: &str) -> Result<(), UserAdminError> {
        let sql =
            "UPDATE users SET password = $3, updated_at = now() WHERE tenant = $1 AND login = $2";
        self.update_user(
            login,
            sqlx::query(sql).bind(&self.tenant).bind(login).bind(stored),
        )
        .await
    }

    /// Sets (or, with `None`, clears) the networks a user may log in from:
    /// Dovecot's `allow_nets` syntax, every entry valid.
    pub async fn set_allow_nets(
        &self,
        login: &str,
        nets: Option<&str>,
    ) -> Result<(), UserAdminError> {
        if let Some(nets) = nets {
            AllowNets::parse_strict(nets)?;
        }
        let sql =
            "UPDATE users SET allow_nets = $3, updated_at = now() WHERE tenant = $1 AND login = $2";
        self.update_user(
            login,
            sqlx::query(sql).bind(&self.tenant).bind(login).bind(nets),
        )
        .await
    }

    /// Sets (or, with `None`, clears) the user's mailbox location: the
    /// store checks it at each login and delivery (confined to the tenant's
    /// root), not here.
    pub async fn set_location(
        &self,
        login: &str,
        location: Option<&str>,
    ) -> Result<(), UserAdminError> {
        let sql =
            "UPDATE users SET location = $3, updated_at = now() WHERE tenant = $1 AND login = $2";
        self.update_user(
            login,
            sqlx::query(sql)
                .bind(&self.tenant)
                .bind(login)
                .bind(location),
        )
        .await
    }

    /// Enables or disables a user. A disabled user cannot log in, whatever
    /// the password; the row, and its mail, stay.
    pub async fn set_enabled(&self, login: &str, enabled: bool) -> Result<(), UserAdminError> {
        let sql =
            "UPDATE users SET enabled = $3, updated_at = now() WHERE tenant = $1 AND login = $2";
        self.update_user(
            login,
            sqlx::query(sql)
                .bind(&self.tenant)
                .bind(login)
                .bind(enabled),
        )
        .await
    }

    /// The tenant's users, by login.
    pub async fn list_users(&self) -> Result<Vec<UserEntry>, UserAdminError> {
        sqlx::query_as(
            "SELECT login, enabled, login_delay, allow_nets, location FROM users \
             WHERE tenant = $1 ORDER BY login",
        )
        .bind(&self.tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Deletes a user's row: they can no longer log in. Their mail is the
    /// store's and stays where it is (a PostgreSQL store's messages too).
    pub async fn delete_user(&self, login: &str) -> Result<(), UserAdminError> {
        self.update_user(
            login,
            sqlx::query("DELETE FROM users WHERE tenant = $1 AND login = $2")
                .bind(&self.tenant)
                .bind(login),
        )
        .await
    }

    /// Runs an UPDATE or DELETE of one user's row; no row is `NotFound`.
    async fn update_user(
        &self,
        login: &str,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<(), UserAdminError> {
        let n = query.execute(&self.pool).await.map_err(db)?.rows_affected();
        if n == 0 {
            return Err(UserAdminError::NotFound(login.into()));
        }
        Ok(())
    }

    /// The dummy for unknown users, re-sampled when stale. Runs on every
    /// verify whatever the login, so it does not tell users apart.
    async fn dummy(&self) -> Result<Option<Arc<str>>, AuthError> {
        {
            let d = self.dummy.lock().unwrap_or_else(PoisonError::into_inner);
            if d.refreshed.is_some_and(|t| t.elapsed() < DUMMY_REFRESH) {
                return Ok(d.stored.clone());
            }
        }
        let sample: Vec<String> = sqlx::query_scalar(
            "SELECT password FROM users WHERE tenant = $1 AND enabled \
             ORDER BY updated_at DESC LIMIT $2",
        )
        .bind(&self.tenant)
        .bind(DUMMY_SAMPLE)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| AuthError(format!("PostgreSQL directory: {e}")))?;
        let stored =
            scheme::most_common_class(sample.iter().map(String::as_str), self.hashing.limits())
                .map(Arc::<str>::from);
        let mut d = self.dummy.lock().unwrap_or_else(PoisonError::into_inner);
        d.stored = stored;
        d.refreshed = Some(Instant::now());
        Ok(d.stored.clone())
    }

    async fn lookup(&self, login: Login<'_>) -> Result<Option<UserRow>, AuthError> {
        let local = login.local.to_lowercase();
        let full = if login.domain.is_empty() {
            local.clone()
        } else {
            format!("{local}@{}", login.domain.to_lowercase())
        };
        // The full login sorts first: it is the longer of the two.
        sqlx::query_as(
            "SELECT login, password, enabled, login_delay, allow_nets, location FROM users \
             WHERE tenant = $1 AND login IN ($2, $3) ORDER BY length(login) DESC LIMIT 1",
        )
        .bind(&self.tenant)
        .bind(&full)
        .bind(&local)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| AuthError(format!("PostgreSQL directory: {e}")))
    }
}

/// Whether the user's `allow_nets` (if any) admits `client`; logs a refusal.
fn admits(tenant: &str, user: &UserRow, client: Option<IpAddr>) -> bool {
    let Some(list) = &user.allow_nets else {
        return true;
    };
    let (nets, invalid) = AllowNets::parse(list);
    if nets.admits(client) {
        return true;
    }
    let client = client.map_or_else(|| "none".to_owned(), |c| c.to_string());
    let invalid: Vec<String> = invalid.iter().map(|i| i.0.clone()).collect();
    info!(
        tenant,
        user = user.login,
        client,
        ?invalid,
        "login refused: the client address is not in the user's allow_nets"
    );
    false
}

impl std::fmt::Debug for PgDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDirectory")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Directory for PgDirectory {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn list_logins(&self) -> Result<Vec<String>, ListError> {
        let logins: Vec<String> =
            sqlx::query_scalar("SELECT login FROM users WHERE tenant = $1 ORDER BY login")
                .bind(&self.tenant)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| AuthError(format!("listing users: {e}")))?;
        Ok(logins)
    }

    async fn find_user(&self, login: Login<'_>) -> Result<Option<UserInfo>, AuthError> {
        Ok(self.lookup(login).await?.map(|u| u.info()))
    }

    async fn verify(
        &self,
        login: Login<'_>,
        password: &[u8],
    ) -> Result<Option<UserInfo>, AuthError> {
        let dummy = self.dummy().await?;
        let user = self.lookup(login).await?;
        let password = password.to_vec();
        let tenant = self.tenant.clone();
        let limits = *self.hashing.limits();
        let client = login.client;
        // Whether this user's hash above the caps was logged already.
        let first_refusal = |user: &UserRow| {
            let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
            if warned.len() >= WARNED_MAX {
                warned.clear();
            }
            warned.insert(format!("{}\n{}", user.login, user.password))
        };
        let log_cap = user.as_ref().is_some_and(|u| {
            matches!(
                scheme::check_cost(&u.password, &limits),
                Err(SchemeError::AboveCap { .. })
            ) && first_refusal(u)
        });
        self.hashing
            .run(move || {
                let check_dummy = || {
                    if let Some(d) = &dummy {
                        let _ = scheme::verify_within(d, &password, &limits);
                    }
                    None
                };
                let Some(user) = user else {
                    return check_dummy();
                };
                match scheme::verify_within(&user.password, &password, &limits) {
                    Ok(true) if user.enabled => {
                        if !admits(&tenant, &user, client) {
                            return None;
                        }
                        Some(user.info())
                    }
                    Ok(_) => None,
                    Err(error @ SchemeError::AboveCap { .. }) => {
                        if log_cap {
                            warn!(tenant, user = user.login, %error, "login refused: password hash above the cost cap (not hashed)");
                        }
                        check_dummy()
                    }
                    Err(error) => {
                        warn!(tenant, user = user.login, %error, "cannot check password");
                        check_dummy()
                    }
                }
            })
            .await
    }

    async fn ping(&self) -> Result<(), AuthError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| AuthError(format!("PostgreSQL directory: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_checked() {
        assert!(check_login("bob@acme.example").is_ok());
        assert!(check_login("frank").is_ok());
        for bad in ["", "Bob@x", "a b", "a@b@c", "@x", "x@"] {
            assert!(check_login(bad).is_err(), "{bad:?}");
        }
    }
}
