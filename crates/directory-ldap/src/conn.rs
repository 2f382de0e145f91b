//! Connections to the LDAP server: one shared service connection for
//! searches (ldap3 multiplexes concurrent operations on it), kept bound as
//! `bind_dn` and reopened when it breaks; and a small pool of connections
//! for `auth_bind`, whose identity changes with every user bind. Every
//! operation is bounded by the configured timeout. Messages never contain a
//! password.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use popgate_auth::AuthError;
use tracing::debug;

use crate::config::{LdapConfig, url_host};

/// Idle auth-bind connections kept for reuse.
const IDLE_BIND_CONNECTIONS: usize = 8;

/// LDAP result codes popgate tells apart (RFC 4511, appendix A).
pub(crate) mod rc {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const INVALID_CREDENTIALS: u32 = 49;
}

/// Opens connections with the directory's TLS settings and timeout.
pub(crate) struct Connector {
    url: String,
    settings: LdapConnSettings,
    timeout: Duration,
}

impl Connector {
    pub(crate) fn new(config: &LdapConfig) -> Result<Self, String> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(config.timeout)
            .set_starttls(config.starttls);
        if let Some(file) = &config.tls_ca_file {
            settings = settings.set_config(Arc::new(tls_config(file)?));
        }
        Ok(Connector {
            url: config.url.clone(),
            settings,
            timeout: config.timeout,
        })
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A new connection, its driver running on the runtime.
    pub(crate) async fn open(&self) -> Result<Ldap, AuthError> {
        let opening = LdapConnAsync::with_settings(self.settings.clone(), &self.url);
        let (conn, ldap) = tokio::time::timeout(self.timeout, opening)
            .await
            .map_err(|_| self.error("connect", format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| self.error("connect", e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                debug!(error = %e, "LDAP connection closed");
            }
        });
        Ok(ldap)
    }

    /// An [`AuthError`] naming the server and the step.
    pub(crate) fn error(&self, step: &str, e: impl std::fmt::Display) -> AuthError {
        AuthError(format!("LDAP {} {step}: {e}", url_host(&self.url)))
    }
}

/// The roots of `file` (PEM) as a rustls client configuration.
fn tls_config(file: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(file).map_err(|e| format!("{}: {e}", file.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Whether an ldap3 error means the connection is gone (rather than an
/// answer from the server).
fn broken(e: &LdapError) -> bool {
    !matches!(e, LdapError::LdapResult { .. } | LdapError::FilterParsing)
}

/// Whether an operation that failed with `e` on a reused connection is
/// worth one more try on a fresh one: the connection broke, but not by
/// taking too long (a retry would double the time a login waits).
fn retry(e: &LdapError) -> bool {
    broken(e) && !matches!(e, LdapError::Timeout { .. })
}

/// The service connection: searches as `bind_dn` (or anonymously).
pub(crate) struct Service {
    connector: Connector,
    bind: Option<(String, String)>,
    current: tokio::sync::Mutex<Option<Ldap>>,
}

impl Service {
    pub(crate) fn new(connector: Connector, config: &LdapConfig) -> Self {
        let bind = config.bind_dn.clone().zip(config.bind_password.clone());
        Service {
            connector,
            bind,
            current: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The shared connection, opened and bound if there is none. Callers
    /// wait here while one of them connects.
    async fn get(&self) -> Result<(Ldap, bool), AuthError> {
        let mut current = self.current.lock().await;
        if let Some(ldap) = current.as_mut()
            && !ldap.is_closed()
        {
            return Ok((ldap.clone(), true));
        }
        let mut ldap = self.connector.open().await?;
        if let Some((dn, password)) = &self.bind {
            let result = ldap
                .with_timeout(self.connector.timeout())
                .simple_bind(dn, password)
                .await
                .map_err(|e| self.connector.error("service bind", e))?;
            if result.rc != rc::SUCCESS {
                return Err(self.connector.error(
                    "service bind",
                    format!("as {dn:?} refused: code {} {}", result.rc, result.text),
                ));
            }
        }
        *current = Some(ldap.clone());
        Ok((ldap, false))
    }

    async fn forget(&self) {
        *self.current.lock().await = None;
    }

    /// Entries in `scope` of `base` matching `filter`, at most `limit` of them
    /// (more is not an error: the caller sees `limit` entries). A reused
    /// connection that turns out broken is replaced once.
    pub(crate) async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: i32,
    ) -> Result<Vec<SearchEntry>, AuthError> {
        loop {
            let (mut ldap, reused) = self.get().await?;
            let searched = ldap
                .with_search_options(SearchOptions::new().sizelimit(limit))
                .with_timeout(self.connector.timeout())
                .search(base, scope, filter, attrs.to_vec())
                .await;
            let result = match searched {
                Ok(result) => result,
                Err(e) if broken(&e) => {
                    self.forget().await;
                    if reused && retry(&e) {
                        continue;
                    }
                    return Err(self.connector.error("search", e));
                }
                Err(e) => return Err(self.connector.error("search", e)),
            };
            let (entries, status) = (result.0, result.1);
            if status.rc != rc::SUCCESS && status.rc != rc::SIZE_LIMIT_EXCEEDED {
                return Err(self.connector.error(
                    "search",
                    format!("code {} {} (base {base:?})", status.rc, status.text),
                ));
            }
            return Ok(entries.into_iter().map(SearchEntry::construct).collect());
        }
    }

    /// Reads the entry `base` itself: whether the server answers, the
    /// service bind works and the base exists.
    pub(crate) async fn read_base(&self, base: &str) -> Result<(), AuthError> {
        let found = self
            .search(base, Scope::Base, "(objectClass=*)", &["1.1"], 1)
            .await?;
        match found.is_empty() {
            true => Err(self
                .connector
                .error("search", format!("base {base:?} not found"))),
            false => Ok(()),
        }
    }
}

/// Connections that bind as users (`auth_bind`).
pub(crate) struct BindPool {
    idle: Mutex<Vec<Ldap>>,
}

impl BindPool {
    pub(crate) fn new() -> Self {
        BindPool {
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut ldap) = idle.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn give_back(&self, ldap: Ldap) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_BIND_CONNECTIONS {
            idle.push(ldap);
        }
    }

    /// Binds as `dn` with `password`: `Ok(true)` when the server accepts
    /// it, `Ok(false)` when it refuses the credentials (or the account),
    /// an error when it cannot be asked. The password must not be empty:
    /// an empty simple bind is an anonymous one and always succeeds
    /// (RFC 4513, 5.1.2); the caller refuses it first.
    pub(crate) async fn bind(
        &self,
        connector: &Connector,
        dn: &str,
        password: &str,
    ) -> Result<bool, AuthError> {
        debug_assert!(!password.is_empty());
        loop {
            let pooled = self.take();
            let reused = pooled.is_some();
            let mut ldap = match pooled {
                Some(ldap) => ldap,
                None => connector.open().await?,
            };
            let bound = ldap
                .with_timeout(connector.timeout())
                .simple_bind(dn, password)
                .await;
            match bound {
                Ok(result) => {
                    self.give_back(ldap);
                    if result.rc != rc::SUCCESS && result.rc != rc::INVALID_CREDENTIALS {
                        debug!(code = result.rc, text = %result.text, "LDAP user bind refused");
                    }
                    return Ok(result.rc == rc::SUCCESS);
                }
                Err(e) if reused && retry(&e) => continue,
                Err(e) => return Err(connector.error("user bind", e)),
            }
        }
    }
}
