//! `auth = { kind = "ldap", ... }`: the LDAP directory's settings. Read in
//! every build, so that a build without the `ldap` feature names the kind
//! it refuses; checked and built only with it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
// Without the feature only `kind` matters: the section is refused.
#[cfg_attr(not(feature = "ldap"), allow(dead_code))]
pub struct LdapSection {
    pub url: String,
    pub base_dn: String,
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    #[serde(default)]
    pub bind_dn: Option<String>,
    #[serde(default)]
    pub bind_password: Option<String>,
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    #[serde(default)]
    pub auth_bind: bool,
    #[serde(default = "default_password_attribute")]
    pub password_attribute: String,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub starttls: bool,
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_nets_attribute: Option<String>,
    #[serde(default)]
    pub login_delay_attribute: Option<String>,
    #[serde(default)]
    pub enabled_attribute: Option<String>,
    /// Dovecot's `user` field: the mailbox an alias login opens.
    #[serde(default)]
    pub user_attribute: Option<String>,
    /// Dovecot's userdb `mail`: the attribute holding the user's Maildir.
    #[serde(default)]
    pub location_attribute: Option<String>,
}

fn default_user_filter() -> String {
    "(&(objectClass=posixAccount)(mail=%u))".into()
}

fn default_password_attribute() -> String {
    "userPassword".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl fmt::Debug for LdapSection {
    /// Without the bind password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapSection")
            .field("url", &self.url)
            .field("base_dn", &self.base_dn)
            .field("bind_dn", &self.bind_dn)
            .field("auth_bind", &self.auth_bind)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "ldap")]
impl LdapSection {
    /// The directory, checked; `key` is the section's, e.g. `tenants[0].auth`.
    pub fn build(
        &self,
        key: &str,
        hashing: popgate_auth::Hashing,
    ) -> Result<directory_ldap::LdapDirectory, super::ConfigError> {
        // The file was read at load (secrets.rs).
        let bind_password = self.bind_password.clone();
        let config = directory_ldap::LdapConfig {
            url: self.url.clone(),
            base_dn: self.base_dn.clone(),
            user_filter: self.user_filter.clone(),
            bind_dn: self.bind_dn.clone(),
            bind_password,
            auth_bind: self.auth_bind,
            password_attribute: self.password_attribute.clone(),
            timeout: self.timeout,
            starttls: self.starttls,
            tls_ca_file: self.tls_ca_file.clone(),
            attributes: directory_ldap::UserAttributes {
                allow_nets: self.allow_nets_attribute.clone(),
                login_delay: self.login_delay_attribute.clone(),
                enabled: self.enabled_attribute.clone(),
                user: self.user_attribute.clone(),
                location: self.location_attribute.clone(),
            },
        };
        directory_ldap::LdapDirectory::new(config, hashing)
            .map_err(|(field, e)| super::ConfigError::new(format!("{key}.{field}"), e))
    }
}

#[cfg(all(test, feature = "ldap"))]
mod tests {
    use super::*;

    fn build(json: &str) -> Result<directory_ldap::LdapDirectory, String> {
        let section: LdapSection = serde_json::from_str(json).map_err(|e| e.to_string())?;
        section
            .build(
                "tenants[0].auth",
                popgate_auth::hashing::Hashing::standalone(),
            )
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_refusals() {
        let dir =
            build(r#"{"url": "ldap://ldap.internal", "base_dn": "dc=example,dc=org"}"#).unwrap();
        assert_eq!(
            dir.config(),
            &directory_ldap::LdapConfig::new("ldap://ldap.internal", "dc=example,dc=org")
        );
        let e = build(r#"{"url": "ldap://x", "base_dn": "dc=x", "user_filter": "(uid=bob)"}"#)
            .unwrap_err();
        assert!(e.starts_with("tenants[0].auth.user_filter: "), "{e}");
        let e = build(r#"{"url": "ldap://x", "base_dn": "dc=x", "bind_dn": "cn=a"}"#).unwrap_err();
        assert!(e.starts_with("tenants[0].auth.bind_password: "), "{e}");
        let e = build(r#"{"url": "ldap://x", "base_dn": "dc=x", "bind_pw": "a"}"#).unwrap_err();
        assert!(e.contains("unknown field `bind_pw`"), "{e}");
        let e = build(r#"{"url": "ldap://x", "base_dn": "dc=x", "enabled_attribute": "a b"}"#)
            .unwrap_err();
        assert!(e.starts_with("tenants[0].auth.enabled_attribute: "), "{e}");
        let e = build(r#"{"url": "ldap://x", "base_dn": "dc=x", "timeout": "soon"}"#).unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
        let e = build(r#"{"url": "ldap://x", "base_dn": "dc=x", "tls_ca_file": "/nonexistent"}"#)
            .unwrap_err();
        assert!(e.starts_with("tenants[0].auth.tls_ca_file: "), "{e}");
    }
}
