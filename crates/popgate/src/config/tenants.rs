//! `[[tenants]]`: a tenant's domains, directory (`auth`) and store.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::{
    CertSection, Config, ConfigError, HttpAuthSection, LdapSection, PgSection, S3Section,
    SqlSection,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
    pub auth: AuthSection,
    pub store: StoreSection,
    #[serde(default)]
    pub max_sessions: Option<u32>,
    /// RFC 2449 LOGIN-DELAY in seconds.
    #[serde(default)]
    pub login_delay: Option<u32>,
    /// RFC 2449 EXPIRE: days, or "never".
    #[serde(default)]
    pub expire: Option<ExpireSetting>,
    /// This tenant's certificate, served to clients whose SNI names one of
    /// its domains or a subdomain of one.
    #[serde(default)]
    pub tls: Option<CertSection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireSetting {
    Days(u32),
    Never,
}

impl<'de> Deserialize<'de> for ExpireSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Days(u32),
            Text(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Days(n)) => Ok(ExpireSetting::Days(n)),
            Ok(Raw::Text(t)) if t.eq_ignore_ascii_case("never") => Ok(ExpireSetting::Never),
            _ => Err(serde::de::Error::custom(
                "expected a number of days or \"never\"",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthSection {
    PasswdFile {
        path: PathBuf,
    },
    /// Users in PostgreSQL (the `users` table of the migrations).
    Postgres(PgSection),
    /// The operator's own query on MySQL/MariaDB or PostgreSQL.
    Sql(SqlSection),
    /// Users in an LDAP tree (`ldap` feature).
    #[cfg_attr(not(feature = "ldap"), allow(dead_code))]
    Ldap(LdapSection),
    /// Logins checked by an HTTP auth service (`http-auth` feature).
    #[cfg_attr(not(feature = "http-auth"), allow(dead_code))]
    Http(HttpAuthSection),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StoreSection {
    Maildir {
        path: String,
        #[serde(default = "default_uidl_format")]
        uidl_format: String,
        /// Follow symlinks below the template's fixed prefix (a customer who
        /// can write a Maildir's parents could link `cur` to another's).
        #[serde(default)]
        follow_symlinks: bool,
        /// Serve the messages Courier's `courierpop3dsizelist` lists with
        /// Courier's POP3 UIDLs and order (a Maildir Courier served).
        #[serde(default)]
        courier_uidls: bool,
    },
    /// Mail in PostgreSQL (`popgate migrate` makes the schema).
    Postgres(PgSection),
    /// Mail in an S3 bucket, one object per message.
    S3(S3Section),
}

fn default_uidl_format() -> String {
    "%08Xu%08Xv".into()
}

/// The directory part of a path template before its first variable.
#[cfg(feature = "maildir")]
fn static_prefix(template: &str) -> PathBuf {
    let fixed = &template[..template.find('%').unwrap_or(template.len())];
    match fixed.rfind('/') {
        Some(0) => PathBuf::from("/"),
        Some(i) => PathBuf::from(&fixed[..i]),
        None => PathBuf::from("."),
    }
}

/// The Maildir path template of a `path` that may be a `mail_location`.
fn maildir_path(path: &str) -> String {
    #[cfg(feature = "maildir")]
    if let Ok(location) = store_maildir::parse_mail_location(path) {
        return location.path;
    }
    path.to_owned()
}

/// Checks every tenant: names, domains, certificates, directory and store.
pub(super) fn validate(
    config: &Config,
    hashing: &std::sync::Arc<popgate_auth::HashPool>,
) -> Result<(), ConfigError> {
    for (i, t) in config.tenants.iter().enumerate() {
        if let Some(c) = &t.tls {
            popgate_server::tls::check_pair(&c.files())
                .map_err(|e| ConfigError::new(format!("tenants[{i}].tls"), e))?;
        }
    }
    if config.tenants.is_empty() {
        return Err(ConfigError::new(
            "tenants",
            "at least one [[tenants]] entry is needed",
        ));
    }
    let mut names = std::collections::HashSet::new();
    let mut domains = std::collections::HashMap::new();
    for (i, t) in config.tenants.iter().enumerate() {
        let key = |k: &str| format!("tenants[{i}].{k}");
        if t.name.is_empty()
            || !t
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new(
                key("name"),
                "letters, digits, '-' and '_' only",
            ));
        }
        if !names.insert(t.name.as_str()) {
            return Err(ConfigError::new(
                key("name"),
                format!("{:?} is used by another tenant", t.name),
            ));
        }
        for d in &t.domains {
            let d = d.to_ascii_lowercase();
            if d.is_empty()
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(ConfigError::new(
                    key("domains"),
                    format!("{d:?} is not a domain name"),
                ));
            }
            if let Some(other) = domains.insert(d.clone(), t.name.clone()) {
                return Err(ConfigError::new(
                    key("domains"),
                    format!("{d:?} also belongs to tenant {other:?}"),
                ));
            }
        }
        if t.domains.is_empty()
            && !config
                .listeners
                .iter()
                .any(|l| l.default_tenant.as_deref() == Some(&t.name))
        {
            return Err(ConfigError::new(
                key("domains"),
                "empty, and no listener has this tenant as default_tenant: nobody could log in",
            ));
        }
        if t.max_sessions == Some(0) {
            return Err(ConfigError::new(
                key("max_sessions"),
                "must be at least 1 (leave it out for no cap)",
            ));
        }
        match &t.auth {
            AuthSection::PasswdFile { path } => {
                // Opened with the configured caps, so that its load
                // warnings (file:line) are about them.
                directory_passwd_file::PasswdFile::open_with(path, hashing.for_tenant(&t.name))
                    .map_err(|e| {
                        ConfigError::new(key("auth.path"), format!("{}: {e}", path.display()))
                    })?;
            }
            #[cfg(feature = "postgres")]
            AuthSection::Postgres(pg) => pg.validate(&key("auth"))?,
            #[cfg(not(feature = "postgres"))]
            AuthSection::Postgres(_) => {
                return Err(super::unbuilt(key("auth"), "kind \"postgres\"", "postgres"));
            }
            #[cfg(any(feature = "mysql", feature = "postgres"))]
            AuthSection::Sql(sql) => sql.validate(&key("auth"))?,
            #[cfg(not(any(feature = "mysql", feature = "postgres")))]
            AuthSection::Sql(_) => {
                return Err(super::unbuilt(key("auth"), "kind \"sql\"", "mysql"));
            }
            #[cfg(feature = "ldap")]
            AuthSection::Ldap(ldap) => drop(ldap.build(&key("auth"), hashing.for_tenant(&t.name))?),
            #[cfg(not(feature = "ldap"))]
            AuthSection::Ldap(_) => {
                return Err(super::unbuilt(key("auth"), "kind \"ldap\"", "ldap"));
            }
            #[cfg(feature = "http-auth")]
            AuthSection::Http(http) => drop(http.build(&key("auth"), &t.name)?),
            #[cfg(not(feature = "http-auth"))]
            AuthSection::Http(_) => {
                return Err(super::unbuilt(key("auth"), "kind \"http\"", "http-auth"));
            }
        }
        match &t.store {
            #[cfg(feature = "postgres")]
            StoreSection::Postgres(pg) => pg.validate(&key("store"))?,
            #[cfg(not(feature = "postgres"))]
            StoreSection::Postgres(_) => {
                return Err(super::unbuilt(
                    key("store"),
                    "kind \"postgres\"",
                    "postgres",
                ));
            }
            #[cfg(feature = "s3")]
            StoreSection::S3(s3) => s3.validate(&key("store"))?,
            #[cfg(not(feature = "s3"))]
            StoreSection::S3(_) => {
                return Err(super::unbuilt(key("store"), "kind \"s3\"", "s3"));
            }
            #[cfg(not(feature = "maildir"))]
            StoreSection::Maildir { .. } => {
                return Err(super::unbuilt(key("store"), "kind \"maildir\"", "maildir"));
            }
            #[cfg(feature = "maildir")]
            StoreSection::Maildir {
                path, uidl_format, ..
            } => {
                let location = store_maildir::parse_mail_location(path)
                    .map_err(|e| ConfigError::new(key("store.path"), e))?;
                for (what, template) in std::iter::once(("", &location.path))
                    .chain(location.control.as_ref().map(|c| ("CONTROL=", c)))
                {
                    if !popgate_store::template_names_user(template) {
                        return Err(ConfigError::new(
                            key("store.path"),
                            format!(
                                "{what}must contain %n or %u (untruncated), or every user shares one {}",
                                if what.is_empty() {
                                    "Maildir"
                                } else {
                                    "uidlist"
                                }
                            ),
                        ));
                    }
                    let root = static_prefix(template);
                    if !root.is_dir() {
                        return Err(ConfigError::new(
                            key("store.path"),
                            format!(
                                "{what}{} does not exist or is not a directory",
                                root.display()
                            ),
                        ));
                    }
                }
                store_maildir::validate_uidl_format(uidl_format)
                    .map_err(|e| ConfigError::new(key("store.uidl_format"), e))?;
            }
        }
    }
    check_shared_mailboxes(config)
}

/// Refuses two tenants whose stores would put two logins in one mailbox:
/// the same Maildir path template, or the same bucket and prefix, without
/// the domain in it (`%d`, or `%u`, the whole login), or with it where a
/// tenant has no domain (bare logins: `%d` is empty).
fn check_shared_mailboxes(config: &Config) -> Result<(), ConfigError> {
    let mut seen: std::collections::HashMap<String, (usize, bool)> = Default::default();
    for (i, t) in config.tenants.iter().enumerate() {
        let (place, template) = match &t.store {
            StoreSection::Maildir { path, .. } => {
                let path = maildir_path(path);
                (format!("maildir {path}"), path)
            }
            #[cfg(not(feature = "s3"))]
            StoreSection::S3(_) => continue,
            #[cfg(feature = "s3")]
            StoreSection::S3(s3) => (
                format!(
                    "s3 {} {} {}",
                    s3.endpoint.as_deref().unwrap_or("aws"),
                    s3.bucket,
                    s3.prefix
                ),
                s3.prefix.clone(),
            ),
            // Rows are keyed by tenant: tenants never share a mailbox.
            StoreSection::Postgres(_) => continue,
        };
        let by_domain = popgate_store::template_names_domain(&template) && !t.domains.is_empty();
        if let Some(&(j, other_by_domain)) = seen.get(&place)
            && !(by_domain && other_by_domain)
        {
            return Err(ConfigError::new(
                format!("tenants[{i}].store"),
                format!(
                    "the same mailboxes as tenants[{j}] ({:?}): bob of one tenant would read and \
                         delete bob's mail of the other; put %d in the template, or give each tenant \
                         its own path",
                    config.tenants[j].name
                ),
            ));
        }
        seen.insert(place, (i, by_domain));
    }
    Ok(())
}
