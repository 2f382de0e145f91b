//! Tenants and the mapping from a login string to a tenant's mailbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pop3_proto::capa::Expire;
use popgate_auth::Directory;
use popgate_store::{MailStore, MailboxId};

/// One customer domain set with its directory and store.
pub struct Tenant {
    pub name: String,
    /// Lower-case domains; the first is the primary one, used for bare logins.
    pub domains: Vec<String>,
    pub directory: Arc<dyn Directory>,
    pub store: Arc<dyn MailStore>,
    /// Cap on concurrent sessions of this tenant in this process.
    pub max_sessions: Option<u32>,
    /// RFC 2449 LOGIN-DELAY in seconds: advertised and enforced per mailbox.
    pub login_delay: Option<u32>,
    /// RFC 2449 EXPIRE: the retention policy to advertise.
    pub expire: Option<Expire>,
    active: AtomicU32,
    last_logins: Mutex<HashMap<String, Instant>>,
}

impl Tenant {
    pub fn new(
        name: impl Into<String>,
        domains: Vec<String>,
        directory: Arc<dyn Directory>,
        store: Arc<dyn MailStore>,
    ) -> Self {
        Tenant {
            name: name.into(),
            domains: domains
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            directory,
            store,
            max_sessions: None,
            login_delay: None,
            expire: None,
            active: AtomicU32::new(0),
            last_logins: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a session in, unless the tenant is at its cap.
    pub fn enter(self: &Arc<Self>) -> Option<TenantSession> {
        let cap = self.max_sessions.unwrap_or(u32::MAX);
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| TenantSession {
                tenant: self.clone(),
            })
    }

    /// Sessions of this tenant open now.
    pub fn active_sessions(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    /// Enforces LOGIN-DELAY: false when the mailbox had a session less than
    /// `delay` seconds ago. Only [`Tenant::record_login`] counts a session,
    /// so a refused login (`[IN-USE]`, a store down) locks nobody out.
    pub fn login_allowed(&self, mailbox: &str, delay: Option<u32>) -> bool {
        let Some(delay) = delay.filter(|&d| d > 0) else {
            return true;
        };
        let delay = Duration::from_secs(u64::from(delay));
        let last = self.last_logins.lock().unwrap_or_else(|p| p.into_inner());
        !matches!(last.get(mailbox), Some(t) if t.elapsed() < delay)
    }

    /// Records a session that opened its mailbox, for LOGIN-DELAY.
    pub fn record_login(&self, mailbox: &str, delay: Option<u32>) {
        let Some(delay) = delay.filter(|&d| d > 0) else {
            return;
        };
        let delay = Duration::from_secs(u64::from(delay));
        let now = Instant::now();
        let mut last = self.last_logins.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() > 100_000 {
            last.retain(|_, t| now.duration_since(*t) < delay);
        }
        last.insert(mailbox.to_owned(), now);
    }
}

/// A session counted against its tenant's cap; dropping it counts it out.
pub struct TenantSession {
    tenant: Arc<Tenant>,
}

impl Drop for TenantSession {
    fn drop(&mut self) {
        self.tenant.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// All tenants, indexed by name and by domain.
#[derive(Default)]
pub struct Tenants {
    by_name: HashMap<String, Arc<Tenant>>,
    by_domain: HashMap<String, Arc<Tenant>>,
}

/// Why two tenants cannot be served together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("tenant name {0:?} is used twice")]
    DuplicateName(String),
    #[error("domain {0:?} belongs to two tenants")]
    DuplicateDomain(String),
}

impl Tenants {
    pub fn new(list: Vec<Tenant>) -> Result<Self, TenantError> {
        let mut t = Tenants::default();
        for tenant in list {
            let tenant = Arc::new(tenant);
            if t.by_name
                .insert(tenant.name.clone(), tenant.clone())
                .is_some()
            {
                return Err(TenantError::DuplicateName(tenant.name.clone()));
            }
            for d in &tenant.domains {
                if t.by_domain.insert(d.clone(), tenant.clone()).is_some() {
                    return Err(TenantError::DuplicateDomain(d.clone()));
                }
            }
        }
        Ok(t)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_name.values()
    }

    /// Maps a login string to its tenant and mailbox. `user@domain` picks the
    /// tenant by domain; a bare `user` goes to `default_tenant` (with that
    /// tenant's primary domain, so `bob` and `bob@primary` are one mailbox).
    /// Logins are case-insensitive. `None` for anything that is not a valid
    /// login of a known tenant: the caller answers exactly as for a wrong
    /// password.
    pub fn resolve(
        &self,
        login: &str,
        default_tenant: Option<&str>,
    ) -> Option<(Arc<Tenant>, MailboxId)> {
        let login = login.to_ascii_lowercase();
        let (local, tenant, domain) = match login.rsplit_once('@') {
            Some((local, domain)) => {
                let tenant = self.by_domain.get(domain)?;
                (local, tenant, domain.to_owned())
            }
            None => {
                let tenant = self.by_name.get(default_tenant?)?;
                let domain = tenant.domains.first().cloned().unwrap_or_default();
                (login.as_str(), tenant, domain)
            }
        };
        if !valid_local_part(local) {
            return None;
        }
        Some((
            tenant.clone(),
            MailboxId::new(tenant.name.clone(), local, domain),
        ))
    }
}

impl Tenant {
    /// The mailbox a directory named for a login of this tenant (`local@domain`,
    /// or a bare local part in the login's domain): `None` if it is no valid
    /// name, or names a domain this tenant does not serve. Never another
    /// tenant's mailbox.
    pub fn mailbox_named(&self, owner: &str, login: &MailboxId) -> Option<MailboxId> {
        let owner = owner.trim().to_ascii_lowercase();
        let (local, domain) = match owner.split_once('@') {
            Some((l, d)) => (l.to_owned(), d.to_owned()),
            None => (owner.clone(), login.domain.clone()),
        };
        let domain_ok = if self.domains.is_empty() {
            domain.is_empty()
        } else {
            self.domains.contains(&domain)
        };
        (valid_local_part(&local) && domain_ok)
            .then(|| MailboxId::new(self.name.clone(), local, domain))
    }
}

/// A local part safe to put into paths, object keys and lock keys: ASCII
/// letters, digits and `. _ + = -`, not starting or ending with a dot and
/// without `..`. Anything else (`/`, `%`, `\`, NUL, spaces, non-ASCII) is
/// refused outright rather than escaped.
pub fn valid_local_part(local: &str) -> bool {
    (1..=64).contains(&local.len())
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+=-".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoDir;
    #[async_trait::async_trait]
    impl Directory for NoDir {
        fn kind(&self) -> &'static str {
            "none"
        }

        async fn find_user(
            &self,
            _: popgate_auth::Login<'_>,
        ) -> Result<Option<popgate_auth::UserInfo>, popgate_auth::AuthError> {
            Ok(None)
        }
        async fn verify(
            &self,
            _: popgate_auth::Login<'_>,
            _: &[u8],
        ) -> Result<Option<popgate_auth::UserInfo>, popgate_auth::AuthError> {
            Ok(None)
        }
    }

    struct NoStore;
    #[async_trait::async_trait]
    impl MailStore for NoStore {
        fn backend(&self) -> &'static str {
            "none"
        }
        async fn open(
            &self,
            _: &MailboxId,
        ) -> Result<Box<dyn popgate_store::Maildrop>, popgate_store::StoreError> {
            Err(popgate_store::StoreError::Permanent("none".into()))
        }
        async fn append(
            &self,
            _: &MailboxId,
            _: popgate_store::MessageStream,
        ) -> Result<String, popgate_store::StoreError> {
            Err(popgate_store::StoreError::Permanent("none".into()))
        }
    }

    fn tenant(name: &str, domains: &[&str]) -> Tenant {
        Tenant::new(
            name,
            domains.iter().map(|d| d.to_string()).collect(),
            Arc::new(NoDir),
            Arc::new(NoStore),
        )
    }

    fn tenants() -> Tenants {
        Tenants::new(vec![
            tenant("acme", &["acme.example", "acme.test"]),
            tenant("globex", &["globex.example"]),
        ])
        .unwrap()
    }

    #[test]
    fn a_directory_named_mailbox_stays_in_the_tenant() {
        let t = tenants();
        let (acme, login) = t.resolve("sales@acme.example", None).unwrap();
        assert_eq!(
            acme.mailbox_named("Bob@ACME.test", &login),
            Some(MailboxId::new("acme", "bob", "acme.test"))
        );
        assert_eq!(
            acme.mailbox_named("bob", &login),
            Some(MailboxId::new("acme", "bob", "acme.example")),
            "a bare name is in the login's domain"
        );
        for hostile in [
            "bob@globex.example",
            "../globex/bob@acme.example",
            "bob/../x",
            "",
            "a@b@acme.example",
            "bob@",
        ] {
            assert_eq!(acme.mailbox_named(hostile, &login), None, "{hostile:?}");
        }
    }

    #[test]
    fn login_picks_tenant_by_domain() {
        let t = tenants();
        let (ten, mb) = t.resolve("Bob@ACME.example", None).unwrap();
        assert_eq!(ten.name, "acme");
        assert_eq!(mb, MailboxId::new("acme", "bob", "acme.example"));
        let (ten, mb) = t.resolve("bob@globex.example", Some("acme")).unwrap();
        assert_eq!(ten.name, "globex");
        assert_eq!(mb.tenant, "globex");
        assert!(t.resolve("bob@unknown.example", Some("acme")).is_none());
    }

    #[test]
    fn bare_login_uses_the_default_tenant_primary_domain() {
        let t = tenants();
        assert!(t.resolve("bob", None).is_none());
        let (_, mb) = t.resolve("bob", Some("acme")).unwrap();
        assert_eq!(mb, MailboxId::new("acme", "bob", "acme.example"));
        assert!(t.resolve("bob", Some("nosuch")).is_none());
    }

    #[test]
    fn hostile_logins_are_refused() {
        let t = tenants();
        for bad in [
            "../globex.example/bob@acme.example",
            "../../etc@acme.example",
            "..@acme.example",
            ".hidden@acme.example",
            "a/b@acme.example",
            "a\\b@acme.example",
            "%d@acme.example",
            "%n",
            "bob%globex.example",
            "a\0b@acme.example",
            "@acme.example",
            "bob@globex.example@acme.example",
            "bob @acme.example",
            "bøb@acme.example",
            "bob@",
            "",
        ] {
            let r = t.resolve(bad, Some("acme"));
            assert!(
                r.is_none(),
                "{bad:?} must be refused, got {:?}",
                r.map(|x| x.1)
            );
        }
    }

    #[test]
    fn duplicate_domains_are_refused() {
        let r = Tenants::new(vec![
            tenant("a", &["x.example"]),
            tenant("b", &["X.example"]),
        ]);
        assert_eq!(
            r.err(),
            Some(TenantError::DuplicateDomain("x.example".into()))
        );
    }

    #[test]
    fn session_cap_counts_in_and_out() {
        let mut t = tenant("a", &["a.example"]);
        t.max_sessions = Some(1);
        let t = Arc::new(t);
        let s = t.enter().unwrap();
        assert!(t.enter().is_none());
        drop(s);
        assert!(t.enter().is_some());
    }

    #[test]
    fn login_delay_is_enforced_per_mailbox() {
        let t = tenant("a", &["a.example"]);
        assert!(t.login_allowed("bob", Some(60)));
        // A login that was refused later (in use, store down) counts not.
        assert!(t.login_allowed("bob", Some(60)));
        t.record_login("bob", Some(60));
        assert!(!t.login_allowed("bob", Some(60)));
        assert!(t.login_allowed("alice", Some(60)));
        assert!(t.login_allowed("bob", None));
    }
}
