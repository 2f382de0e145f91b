//! The settings of [`RedisLocks`](super::RedisLocks), their validation, and
//! the Redis client they make.

use std::time::Duration;

use super::MIN_TTL;
use super::endpoint::{Connector, Endpoint, SentinelEndpoint};

/// The longest any single Redis call may take.
const MAX_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// What a [`RedisLocks`] needs to know.
#[derive(Clone, Debug)]
pub struct RedisLocksConfig {
    /// Where the Redis is: one server, a Sentinel-watched master, or a
    /// Cluster.
    pub endpoint: Endpoint,
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
    /// One server: `redis://[user:password@]host:port[/db]` or `rediss://...`.
    pub fn new(url: impl Into<String>) -> Self {
        Self::at(Endpoint::Url(url.into()))
    }

    /// The master the sentinels (`redis://host:port` URLs) monitor as
    /// `master_name`.
    pub fn sentinel(sentinels: Vec<String>, master_name: impl Into<String>) -> Self {
        Self::at(Endpoint::Sentinel(SentinelEndpoint {
            sentinels,
            master_name: master_name.into(),
            ..SentinelEndpoint::default()
        }))
    }

    /// A Redis Cluster, from some of its nodes.
    pub fn cluster(nodes: Vec<String>) -> Self {
        Self::at(Endpoint::Cluster(nodes))
    }

    fn at(endpoint: Endpoint) -> Self {
        RedisLocksConfig {
            endpoint,
            ttl: Duration::from_secs(30),
            key_prefix: "popgate".into(),
            wait: Duration::ZERO,
            tls_ca: None,
        }
    }

    /// Checks the values without connecting. The error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.connector().map_err(|e| (self.endpoint_key(), e))?;
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

    /// The config key the endpoint came from, for errors.
    fn endpoint_key(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Url(_) => "url",
            Endpoint::Sentinel(_) => "sentinels",
            Endpoint::Cluster(_) => "cluster",
        }
    }

    pub(super) fn connector(&self) -> Result<Connector, String> {
        Connector::new(&self.endpoint, self.tls_ca.as_deref(), self.op_timeout())
    }

    pub(super) fn op_timeout(&self) -> Duration {
        (self.ttl / 5).min(MAX_OP_TIMEOUT)
    }
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
        c.endpoint = Endpoint::Url("http://x".into());
        assert_eq!(c.validate().unwrap_err().0, "url");
        let c = RedisLocksConfig::sentinel(vec![], "m");
        assert_eq!(c.validate().unwrap_err().0, "sentinels");
        let c = RedisLocksConfig::sentinel(vec!["redis://127.0.0.1:26379".into()], "");
        assert!(c.validate().unwrap_err().1.contains("master_name"));
        let c = RedisLocksConfig::sentinel(vec!["redis://h:1".into(), "rediss://h:2".into()], "m");
        assert!(c.validate().unwrap_err().1.contains("mix"));
        RedisLocksConfig::sentinel(vec!["redis://:pw@127.0.0.1:26379".into()], "m")
            .validate()
            .unwrap();
        let c = RedisLocksConfig::cluster(vec![]);
        assert_eq!(c.validate().unwrap_err().0, "cluster");
        let c = RedisLocksConfig::cluster(vec!["unix:///tmp/x".into()]);
        assert_eq!(c.validate().unwrap_err().0, "cluster");
        RedisLocksConfig::cluster(vec!["redis://127.0.0.1:7000".into()])
            .validate()
            .unwrap();
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
