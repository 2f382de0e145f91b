//! The settings of [`RedisLocks`](super::RedisLocks), their validation, and
//! the Redis client they make.

use std::time::Duration;

use ::redis::{Client, RedisResult};

use super::MIN_TTL;

/// The longest any single Redis call may take.
const MAX_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// What a [`RedisLocks`] needs to know.
#[derive(Clone, Debug)]
pub struct RedisLocksConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS).
    pub url: String,
    /// How long a lock lives without renewal.
    pub ttl: Duration,
    /// The first part of every key: `{key_prefix}:{mailbox}:lock`.
    pub key_prefix: String,
    /// How long a login waits for a mailbox in use before `[IN-USE]`.
    pub wait: Duration,
    /// PEM CA certificates to trust for `rediss://` instead of the system's.
    pub tls_ca: Option<Vec<u8>>,
}

impl RedisLocksConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisLocksConfig {
            url: url.into(),
            ttl: Duration::from_secs(30),
            key_prefix: "popgate".into(),
            wait: Duration::ZERO,
            tls_ca: None,
        }
    }

    /// Checks the values without connecting. The error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.client().map_err(|e| ("url", e))?;
        if self.ttl < MIN_TTL {
            return Err(("ttl", format!("must be at least {}s", MIN_TTL.as_secs())));
        }
        if self.wait >= self.ttl {
            return Err(("wait", "must be shorter than ttl".into()));
        }
        let p = &self.key_prefix;
        if p.is_empty()
            || p.contains(|c: char| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            return Err((
                "key_prefix",
                "must be non-empty, without spaces or braces".into(),
            ));
        }
        Ok(())
    }

    pub(super) fn client(&self) -> Result<Client, String> {
        let lower = self.url.to_ascii_lowercase();
        let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|s| lower.starts_with(s));
        if !scheme_ok {
            return Err(format!(
                "{}: use redis://host:port or rediss://host:port",
                redact(&self.url)
            ));
        }
        let client = match &self.tls_ca {
            None => Client::open(self.url.as_str()),
            Some(pem) => tls_client(&self.url, pem),
        };
        client.map_err(|e| format!("{}: {e}", redact(&self.url)))
    }

    pub(super) fn op_timeout(&self) -> Duration {
        (self.ttl / 5).min(MAX_OP_TIMEOUT)
    }
}

fn tls_client(url: &str, pem: &[u8]) -> RedisResult<Client> {
    Client::build_with_tls(
        url,
        ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        },
    )
}

/// The URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end], user, &rest[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("rediss://user:pw@h/1"), "rediss://user:***@h/1");
    }

    #[test]
    fn validation_names_the_field() {
        let ok = RedisLocksConfig::new("redis://127.0.0.1:6379");
        ok.validate().unwrap();
        let mut c = ok.clone();
        c.url = "http://x".into();
        assert_eq!(c.validate().unwrap_err().0, "url");
        let mut c = ok.clone();
        c.ttl = Duration::from_millis(500);
        assert_eq!(c.validate().unwrap_err().0, "ttl");
        let mut c = ok.clone();
        c.wait = c.ttl;
        assert_eq!(c.validate().unwrap_err().0, "wait");
        let mut c = ok;
        c.key_prefix = "a{b".into();
        assert_eq!(c.validate().unwrap_err().0, "key_prefix");
    }
}
