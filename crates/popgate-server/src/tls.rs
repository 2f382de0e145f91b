//! TLS with rustls (ring): certificates from PEM files, a per-tenant
//! certificate chosen by SNI, and reloading without a restart.
//!
//! SNI matching: a tenant's certificate serves the names that equal one of
//! its domains or end with `.domain` (`pop.acme.example` for `acme.example`);
//! any other name, or none, gets the default certificate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

mod x509;

/// A certificate chain and its key, as PEM file paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// A tenant's own certificate: served for its domains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantCert {
    pub tenant: String,
    pub domains: Vec<String>,
    pub files: CertFiles,
}

/// All certificates a process serves.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub default: Option<CertFiles>,
    /// Per-tenant certificates.
    pub by_tenant: Vec<TenantCert>,
}

/// A loaded certificate as the expiry metric shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The tenant whose certificate it is; `None` for `[tls]`'s default.
    pub tenant: Option<String>,
    /// The leaf certificate's subject CN (empty without one).
    pub common_name: String,
    /// The leaf certificate's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

#[derive(Debug)]
struct Loaded {
    default: Option<Arc<CertifiedKey>>,
    by_domain: HashMap<String, Arc<CertifiedKey>>,
    stamps: Vec<Option<SystemTime>>,
    certificates: Vec<CertificateInfo>,
}

#[derive(Debug)]
struct Resolver {
    loaded: RwLock<Arc<Loaded>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            // The name itself, then each parent domain.
            let mut candidate = name.as_str();
            loop {
                if let Some(key) = loaded.by_domain.get(candidate) {
                    return Some(key.clone());
                }
                match candidate.split_once('.') {
                    Some((_, parent)) if !parent.is_empty() => candidate = parent,
                    _ => break,
                }
            }
        }
        loaded.default.clone()
    }
}

/// Serves TLS handshakes; `reload` swaps certificates for new handshakes
/// while connections already established keep theirs.
pub struct TlsProvider {
    /// Which files; replaced by [`TlsProvider::reload_with`].
    settings: RwLock<TlsSettings>,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
}

impl TlsProvider {
    /// Loads every certificate; an error names the file at fault.
    pub fn load(settings: TlsSettings) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load_all(&settings, &provider)?;
        let resolver = Arc::new(Resolver {
            loaded: RwLock::new(Arc::new(loaded)),
        });
        let config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        Ok(TlsProvider {
            settings: RwLock::new(settings),
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Re-reads the files. On error the old certificates stay in use.
    pub fn reload(&self) -> Result<(), String> {
        let settings = self.settings().clone();
        let loaded = load_all(&settings, &self.provider)?;
        *self
            .resolver
            .loaded
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Loads the certificates of other settings (a reloaded configuration:
    /// tenants with certificates added or removed) and serves them from now
    /// on. On error the old settings and certificates stay.
    pub fn reload_with(&self, settings: TlsSettings) -> Result<(), String> {
        let loaded = load_all(&settings, &self.provider)?;
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
        *self
            .resolver
            .loaded
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    fn settings(&self) -> std::sync::RwLockReadGuard<'_, TlsSettings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The certificates in use now (since the last successful (re)load).
    pub fn certificates(&self) -> Vec<CertificateInfo> {
        self.resolver
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .certificates
            .clone()
    }

    /// Whether any file changed on disk since the last (re)load.
    pub fn files_changed(&self) -> bool {
        let now = stamps(&self.settings());
        let loaded = self
            .resolver
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        now != loaded.stamps
    }
}

fn files(settings: &TlsSettings) -> impl Iterator<Item = &CertFiles> {
    settings
        .default
        .iter()
        .chain(settings.by_tenant.iter().map(|t| &t.files))
}

fn stamps(settings: &TlsSettings) -> Vec<Option<SystemTime>> {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    files(settings)
        .flat_map(|f| [mtime(&f.certificate), mtime(&f.private_key)])
        .collect()
}

fn load_all(settings: &TlsSettings, provider: &CryptoProvider) -> Result<Loaded, String> {
    let stamps = stamps(settings);
    let mut certificates = Vec::new();
    let default = settings
        .default
        .as_ref()
        .map(|f| load_pair(f, provider))
        .transpose()?;
    if let Some(key) = &default {
        certificates.extend(certificate_info(None, key));
    }
    let mut by_domain = HashMap::new();
    for t in &settings.by_tenant {
        let key = load_pair(&t.files, provider)?;
        certificates.extend(certificate_info(Some(&t.tenant), &key));
        for d in &t.domains {
            by_domain.insert(d.to_ascii_lowercase(), key.clone());
        }
    }
    Ok(Loaded {
        default,
        by_domain,
        stamps,
        certificates,
    })
}

/// The expiry and CN of a chain's leaf; `None` (no metric, a warning) for
/// a certificate this reader cannot follow, which rustls accepted.
fn certificate_info(tenant: Option<&str>, key: &CertifiedKey) -> Option<CertificateInfo> {
    let leaf = key.end_entity_cert().ok()?;
    let Some(info) = x509::leaf_info(leaf.as_ref()) else {
        tracing::warn!(
            tenant = tenant.unwrap_or("-"),
            "cannot read the certificate's expiry: no expiry metric for it"
        );
        return None;
    };
    Some(CertificateInfo {
        tenant: tenant.map(str::to_owned),
        common_name: info.common_name,
        not_after: info.not_after,
    })
}

/// Reads one certificate chain and its private key.
pub fn load_pair(
    files: &CertFiles,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let cert_path = &files.certificate;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in the file",
            cert_path.display()
        ));
    }
    let key_path = &files.private_key;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable private key: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{} does not match {}: {e}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Checks that a certificate and key load and match (for config checking).
pub fn check_pair(files: &CertFiles) -> Result<(), String> {
    load_pair(files, &rustls::crypto::ring::default_provider()).map(|_| ())
}

/// A bounded label for a failed handshake, for metrics.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "eof",
        std::io::ErrorKind::InvalidData => "protocol",
        _ => "io",
    }
}
