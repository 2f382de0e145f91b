//! [`SqlDirectory`]: the [`Directory`] over the operator's queries.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{error, info, warn};

use popgate_auth::hashing::Hashing;
use popgate_auth::nets::AllowNets;
use popgate_auth::scheme::{self, CostLimits, Scheme, SchemeError};
use popgate_auth::{AuthError, Directory, ListError, Login, UserInfo};

use crate::SqlConfig;
use crate::db::{Db, Found};
use crate::query::Query;

/// Cost classes remembered for the dummy.
const CLASSES_MAX: usize = 32;
/// Users whose hash above the caps was logged, remembered.
const WARNED_MAX: usize = 10_000;

/// A tenant's users behind the operator's SQL queries.
pub struct SqlDirectory {
    db: Db,
    password: Query,
    user: Option<Query>,
    iterate: Option<Query>,
    default_scheme: Scheme,
    query_timeout: Duration,
    hashing: Hashing,
    tenant: String,
    dummy: Arc<Dummy>,
    warned: Mutex<HashSet<String>>,
}

/// The dummy hash checked for unknown users: one stored string of the cost
/// class the query's rows showed most often, or, before any row, a hash
/// made once in `default_scheme`.
#[derive(Default)]
struct Dummy {
    /// class -> (rows seen, a stored string of it)
    seen: Mutex<HashMap<String, (u64, Arc<str>)>>,
    fallback: OnceLock<Option<Arc<str>>>,
}

impl Dummy {
    fn learn(&self, stored: &str, limits: &CostLimits) {
        let Ok(class) = scheme::cost_class(stored) else {
            return;
        };
        if scheme::check_cost(stored, limits).is_err() {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = seen.get_mut(&class) {
            entry.0 += 1;
        } else if seen.len() < CLASSES_MAX {
            seen.insert(class, (1, Arc::from(stored)));
        }
    }

    fn current(&self) -> Option<Arc<str>> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.values()
            .max_by_key(|(n, _)| *n)
            .map(|(_, s)| s.clone())
    }

    /// Blocking (it may hash once): call it in a hashing slot.
    fn check(
        &self,
        learned: Option<Arc<str>>,
        default: Scheme,
        password: &[u8],
        limits: &CostLimits,
    ) {
        let dummy = learned.or_else(|| {
            self.fallback
                .get_or_init(|| match default {
                    Scheme::Plain => None,
                    other => scheme::hash(other, b"popgate dummy").ok().map(Arc::from),
                })
                .clone()
        });
        if let Some(dummy) = dummy {
            let _ = scheme::verify_within(&dummy, password, limits);
        }
    }
}

impl SqlDirectory {
    /// The directory of `tenant`, hashing in `hashing`'s slots. Connects
    /// when first used. Fails, naming the field, on settings that
    /// [`SqlConfig::validate`] refuses.
    pub fn connect_lazy(
        config: &SqlConfig,
        tenant: impl Into<String>,
        hashing: Hashing,
    ) -> Result<Self, (&'static str, String)> {
        config.validate()?;
        let dialect = config.dialect().map_err(|e| ("url", e))?;
        let queries = config.queries(dialect)?;
        let db = Db::connect_lazy(config).map_err(|e| ("url", e))?;
        Ok(SqlDirectory {
            db,
            password: queries.password,
            user: queries.user,
            iterate: queries.iterate,
            default_scheme: config.default_scheme,
            query_timeout: config.query_timeout,
            hashing,
            tenant: tenant.into(),
            dummy: Arc::default(),
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// The rows of `query` for `login`.
    async fn rows(
        &self,
        what: &str,
        query: &Query,
        login: Login<'_>,
    ) -> Result<Vec<Found>, AuthError> {
        let params = query.params(login.local, login.domain);
        self.db
            .rows(query.sql(), &params, self.query_timeout)
            .await
            .map_err(|e| {
                warn!(tenant = self.tenant, error = %e, "SQL directory: {what} failed");
                AuthError(format!("SQL directory: {what}: {e}"))
            })
    }

    /// The stored string as popgate's schemes read it: a password without
    /// `{SCHEME}` is in `default_scheme`.
    fn stored(&self, password: &str) -> String {
        match (password.starts_with('{'), self.default_scheme) {
            (true, _) | (false, Scheme::Crypt) => password.to_owned(),
            (false, scheme) => format!("{{{scheme}}}{password}"),
        }
    }

    /// Whether a refusal for a hash above the caps is the first for this
    /// user and hash (it is logged once).
    fn first_refusal(&self, user: &str, stored: &str) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.len() >= WARNED_MAX {
            warned.clear();
        }
        warned.insert(format!("{user}\n{stored}"))
    }

    /// The one row of a login, `None` for none or (logged) more than one.
    async fn user_row(&self, login: Login<'_>) -> Result<Option<Found>, AuthError> {
        let mut rows = self.rows("password_query", &self.password, login).await?;
        if let Some(row) = rows.first()
            && !row.has_password_column
        {
            error!(
                tenant = self.tenant,
                "SQL directory: password_query returns no `password` column"
            );
            return Err(AuthError(
                "SQL directory: password_query returns no `password` column".into(),
            ));
        }
        if rows.len() > 1 {
            error!(
                tenant = self.tenant,
                user = %UserName(login),
                "SQL directory: password_query returned more than one row for the login; \
                 refused (the query must return one row per user)"
            );
            return Ok(None);
        }
        Ok(rows.pop())
    }
}

/// A login as `local@domain` (or `local`) in logs.
struct UserName<'a>(Login<'a>);

impl std::fmt::Display for UserName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.domain {
            "" => f.write_str(self.0.local),
            domain => write!(f, "{}@{domain}", self.0.local),
        }
    }
}

/// Whether the row's `allow_nets` (if any) admits `client`; logs a refusal.
fn admits(tenant: &str, user: &str, nets: Option<&str>, client: Option<IpAddr>) -> bool {
    let Some(list) = nets else {
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
        user,
        client,
        ?invalid,
        "login refused: the client address is not in the user's allow_nets"
    );
    false
}

impl std::fmt::Debug for SqlDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlDirectory")
            .field("tenant", &self.tenant)
            .field("password_query", &self.password.sql())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Directory for SqlDirectory {
    fn kind(&self) -> &'static str {
        "sql"
    }

    async fn verify(
        &self,
        login: Login<'_>,
        password: &[u8],
    ) -> Result<Option<UserInfo>, AuthError> {
        let row = self.user_row(login).await?;
        let limits = *self.hashing.limits();
        let stored = row
            .as_ref()
            .and_then(|r| r.password.as_deref())
            .map(|p| self.stored(p));
        if let Some(stored) = &stored {
            self.dummy.learn(stored, &limits);
        }
        let over_cap = stored
            .as_deref()
            .and_then(|s| match scheme::check_cost(s, &limits) {
                Err(e @ SchemeError::AboveCap { .. }) => Some(e),
                _ => None,
            });
        let user = UserName(login).to_string();
        if let (Some(e), Some(s)) = (&over_cap, &stored)
            && self.first_refusal(&user, s)
        {
            warn!(tenant = self.tenant, user, error = %e, "login refused: password hash above the cost cap (not hashed)");
        }
        let learned = self.dummy.current();
        let dummy = self.dummy.clone();
        let default = self.default_scheme;
        let tenant = self.tenant.clone();
        let client = login.client;
        let password = password.to_vec();
        self.hashing
            .run(move || {
                let check_dummy = || dummy.check(learned.clone(), default, &password, &limits);
                let (Some(row), Some(stored)) = (row, stored.filter(|_| over_cap.is_none())) else {
                    check_dummy();
                    return None;
                };
                match scheme::verify_within(&stored, &password, &limits) {
                    Ok(true) if row.enabled => {
                        admits(&tenant, &user, row.allow_nets.as_deref(), client)
                            .then(|| row.info(&user))
                    }
                    Ok(_) => None,
                    Err(error) => {
                        warn!(tenant, user, %error, "cannot check password");
                        check_dummy();
                        None
                    }
                }
            })
            .await
    }

    async fn find_user(&self, login: Login<'_>) -> Result<Option<UserInfo>, AuthError> {
        let (what, query) = match &self.user {
            Some(q) => ("user_query", q),
            None => ("password_query", &self.password),
        };
        let user = UserName(login).to_string();
        Ok(self
            .rows(what, query, login)
            .await?
            .into_iter()
            .next()
            .map(|row| row.info(&user)))
    }

    async fn list_logins(&self) -> Result<Vec<String>, ListError> {
        let Some(query) = &self.iterate else {
            return Err(ListError::Unsupported(
                "an SQL directory lists its users with iterate_query, which this tenant's auth \
                 does not set: add one, e.g. iterate_query = \"SELECT username AS user FROM mailbox\""
                    .into(),
            ));
        };
        let listing = self
            .db
            .logins(query.sql(), self.query_timeout)
            .await
            .map_err(|e| {
                warn!(tenant = self.tenant, error = %e, "SQL directory: iterate_query failed");
                AuthError(format!("SQL directory: iterate_query: {e}"))
            })?;
        if listing.skipped > 0 {
            warn!(
                tenant = self.tenant,
                rows = listing.skipped,
                "SQL directory: iterate_query returned rows without a login; skipped"
            );
        }
        let mut logins = listing.logins;
        logins.sort_unstable();
        logins.dedup();
        Ok(logins)
    }

    async fn ping(&self) -> Result<(), AuthError> {
        self.db
            .ping(self.query_timeout)
            .await
            .map_err(|e| AuthError(format!("SQL directory: {e}")))
    }
}
