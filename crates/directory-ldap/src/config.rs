//! The settings of an LDAP directory, their checks, and the user filter
//! with the login put in (escaped as RFC 4515 says).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Dovecot's usual `pass_filter` for mail users.
pub const DEFAULT_USER_FILTER: &str = "(&(objectClass=posixAccount)(mail=%u))";

/// How to reach the directory and find a user in it.
#[derive(Clone, PartialEq, Eq)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Where users are searched (subtree).
    pub base_dn: String,
    /// The search filter; `%u` is the whole login, `%n` its local part,
    /// `%d` its domain, `%%` a `%`. Each value is escaped (RFC 4515).
    pub user_filter: String,
    /// The service account that searches; `None`: anonymous searches.
    pub bind_dn: Option<String>,
    /// Its password.
    pub bind_password: Option<String>,
    /// Check a password by binding as the user's DN (Dovecot's
    /// `auth_bind = yes`) instead of reading `password_attribute`.
    pub auth_bind: bool,
    /// The attribute holding the `{SCHEME}` password (without auth_bind).
    pub password_attribute: String,
    /// The most one LDAP operation (connect, bind, search) may take.
    pub timeout: Duration,
    /// Upgrade `ldap://` with StartTLS before anything is sent.
    pub starttls: bool,
    /// PEM file of the CAs that sign the server's certificate; `None`: the
    /// system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Per-user fields read from the entry, each an attribute name.
    pub attributes: UserAttributes,
}

/// Attributes of a user's entry that popgate reads besides the password,
/// as Dovecot's `pass_attrs` maps them. Each is optional; an entry without
/// the attribute has no such restriction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserAttributes {
    /// Dovecot's `allow_nets`: the networks the user may log in from
    /// (values joined; an entry that does not parse matches nothing).
    pub allow_nets: Option<String>,
    /// RFC 2449 LOGIN-DELAY in seconds.
    pub login_delay: Option<String>,
    /// When set, the user may log in only if this attribute holds `TRUE`,
    /// `active`, `enabled`, `yes` or `1` (any case); a missing attribute
    /// disables the user. The user still exists for delivery.
    pub enabled: Option<String>,
    /// Dovecot's `user` field (`pass_attrs = mailRoutingAddress=user`): the
    /// mailbox this login opens, for an alias. Confined to the login's
    /// tenant by the front end, like the SQL `user` column.
    pub user: Option<String>,
    /// Dovecot's userdb `mail` (`user_attrs = mailMessageStore=mail`):
    /// where the user's Maildir is. Confined to the tenant's Maildir root
    /// by the store, like the SQL `location` column.
    pub location: Option<String>,
}

impl LdapConfig {
    /// The defaults around a URL and base DN.
    pub fn new(url: impl Into<String>, base_dn: impl Into<String>) -> Self {
        LdapConfig {
            url: url.into(),
            base_dn: base_dn.into(),
            user_filter: DEFAULT_USER_FILTER.into(),
            bind_dn: None,
            bind_password: None,
            auth_bind: false,
            password_attribute: "userPassword".into(),
            timeout: Duration::from_secs(5),
            starttls: false,
            tls_ca_file: None,
            attributes: UserAttributes::default(),
        }
    }

    /// Checks the settings; an error names the field and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let scheme = self.url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("ldap") => {}
            Some("ldaps") if self.starttls => {
                return Err((
                    "starttls",
                    "an ldaps:// URL is TLS from the start; use ldap:// with starttls".into(),
                ));
            }
            Some("ldaps") => {}
            _ => {
                return Err((
                    "url",
                    format!("{:?} is not an ldap:// or ldaps:// URL", self.url),
                ));
            }
        }
        if url_host(&self.url).is_empty() {
            return Err(("url", "has no host".into()));
        }
        if self.base_dn.trim().is_empty() {
            return Err(("base_dn", "must not be empty".into()));
        }
        check_filter(&self.user_filter).map_err(|e| ("user_filter", e))?;
        match (&self.bind_dn, &self.bind_password) {
            (Some(_), None) => {
                return Err((
                    "bind_password",
                    "bind_dn is set: give bind_password or bind_password_file".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(("bind_dn", "bind_password is set but bind_dn is not".into()));
            }
            (Some(dn), Some(_)) if dn.trim().is_empty() => {
                return Err(("bind_dn", "must not be empty".into()));
            }
            _ => {}
        }
        if !self.auth_bind && self.password_attribute.trim().is_empty() {
            return Err(("password_attribute", "must not be empty".into()));
        }
        if self.timeout.is_zero() {
            return Err(("timeout", "must be more than 0".into()));
        }
        let a = &self.attributes;
        for (field, name) in [
            ("allow_nets_attribute", &a.allow_nets),
            ("login_delay_attribute", &a.login_delay),
            ("enabled_attribute", &a.enabled),
            ("user_attribute", &a.user),
            ("location_attribute", &a.location),
        ] {
            let valid = |n: &str| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            };
            if name.as_deref().is_some_and(|n| !valid(n)) {
                return Err((
                    field,
                    "must be an attribute name (letters, digits, '-')".into(),
                ));
            }
        }
        Ok(())
    }

    /// The filter for one login.
    pub fn filter_for(&self, user: &str, local: &str, domain: &str) -> String {
        expand(&self.user_filter, user, local, domain)
    }
}

impl fmt::Debug for LdapConfig {
    /// Without the bind password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapConfig")
            .field("url", &self.url)
            .field("base_dn", &self.base_dn)
            .field("user_filter", &self.user_filter)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &self.bind_password.as_ref().map(|_| "…"))
            .field("auth_bind", &self.auth_bind)
            .field("password_attribute", &self.password_attribute)
            .field("timeout", &self.timeout)
            .field("starttls", &self.starttls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// The host part of an LDAP URL, for messages.
pub(crate) fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority.rsplit('@').next().unwrap_or_default()
}

/// Puts the login into the filter template, each value escaped so that
/// `*`, `(`, `)`, `\` and NUL in a login stay literal.
fn expand(template: &str, user: &str, local: &str, domain: &str) -> String {
    let mut out = String::with_capacity(template.len() + user.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(&ldap3::ldap_escape(user)),
            Some('n') => out.push_str(&ldap3::ldap_escape(local)),
            Some('d') => out.push_str(&ldap3::ldap_escape(domain)),
            Some('%') => out.push('%'),
            // Refused by check_filter; kept as written.
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// A filter template must name the login and parse once it is put in.
fn check_filter(template: &str) -> Result<(), String> {
    let mut chars = template.chars();
    let mut names_login = false;
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('u' | 'n') => names_login = true,
                Some('d' | '%') => {}
                Some(other) => {
                    return Err(format!("unknown variable %{other} (use %u, %n, %d or %%)"));
                }
                None => return Err("ends with a lone %".into()),
            }
        }
    }
    if !names_login {
        return Err("must contain %u or %n, or every login finds the same entries".into());
    }
    let sample = expand(template, "user@example.org", "user", "example.org");
    if !sample.starts_with('(') || ldap3::parse_filter(&sample).is_err() {
        return Err(format!("{template:?} is not an LDAP filter (RFC 4515)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LdapConfig {
        LdapConfig::new("ldap://127.0.0.1:389", "ou=people,dc=example,dc=org")
    }

    #[test]
    fn injection_stays_literal() {
        let c = config();
        assert_eq!(
            c.filter_for("*)(uid=*", "*)(uid=*", ""),
            r"(&(objectClass=posixAccount)(mail=\2a\29\28uid=\2a))"
        );
        assert_eq!(
            c.filter_for("a\\b\0c", "", ""),
            r"(&(objectClass=posixAccount)(mail=a\5cb\00c))"
        );
        let c = LdapConfig {
            user_filter: "(&(uid=%n)(o=%d)(x=100%%))".into(),
            ..config()
        };
        assert_eq!(
            c.filter_for("bob@ex.org", "bob", "ex.org"),
            "(&(uid=bob)(o=ex.org)(x=100%))"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let field = |c: LdapConfig| c.validate().unwrap_err().0;
        assert!(config().validate().is_ok());
        assert_eq!(
            field(LdapConfig {
                url: "http://x".into(),
                ..config()
            }),
            "url"
        );
        assert_eq!(
            field(LdapConfig {
                url: "ldaps://x".into(),
                starttls: true,
                ..config()
            }),
            "starttls"
        );
        assert_eq!(
            field(LdapConfig {
                base_dn: " ".into(),
                ..config()
            }),
            "base_dn"
        );
        for bad in [
            "(mail=bob)",
            "(mail=%x)",
            "mail=%u",
            "(&(mail=%u)",
            "(mail=%u)%",
        ] {
            let c = LdapConfig {
                user_filter: bad.into(),
                ..config()
            };
            assert_eq!(c.validate().unwrap_err().0, "user_filter", "{bad}");
        }
        assert_eq!(
            field(LdapConfig {
                bind_dn: Some("cn=admin".into()),
                ..config()
            }),
            "bind_password"
        );
        assert_eq!(
            field(LdapConfig {
                bind_password: Some("x".into()),
                ..config()
            }),
            "bind_dn"
        );
        assert_eq!(
            field(LdapConfig {
                timeout: Duration::ZERO,
                ..config()
            }),
            "timeout"
        );
    }

    #[test]
    fn debug_hides_the_bind_password() {
        let c = LdapConfig {
            bind_dn: Some("cn=admin".into()),
            bind_password: Some("hunter2".into()),
            ..config()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(url_host("ldaps://u:p@host:636/dc=x"), "host:636");
    }
}
