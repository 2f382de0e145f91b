//! `auth = { kind = "http", ... }`: the HTTP auth hook's settings. Read in
//! every build, so that a build without the `http-auth` feature names the
//! kind it refuses; checked and built only with it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
// Without the feature only `kind` matters: the section is refused.
#[cfg_attr(not(feature = "http-auth"), allow(dead_code))]
pub struct HttpAuthSection {
    pub url: String,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_cache_ttl", deserialize_with = "duration")]
    pub cache_ttl: Duration,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(30)
}

impl fmt::Debug for HttpAuthSection {
    /// Without the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAuthSection")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "http-auth")]
impl HttpAuthSection {
    /// The directory, checked; `key` is the section's, e.g. `tenants[0].auth`.
    pub fn build(
        &self,
        key: &str,
        tenant: &str,
    ) -> Result<directory_http::HttpDirectory, super::ConfigError> {
        // The file was read at load (secrets.rs).
        let bearer_token = self.bearer_token.clone();
        let config = directory_http::HttpConfig {
            url: self.url.clone(),
            timeout: self.timeout,
            cache_ttl: self.cache_ttl,
            bearer_token,
        };
        directory_http::HttpDirectory::new(config, tenant)
            .map_err(|(field, e)| super::ConfigError::new(format!("{key}.{field}"), e))
    }
}

#[cfg(all(test, feature = "http-auth"))]
mod tests {
    use super::*;

    fn build(json: &str) -> Result<directory_http::HttpDirectory, String> {
        let section: HttpAuthSection = serde_json::from_str(json).map_err(|e| e.to_string())?;
        section
            .build("tenants[0].auth", "acme")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_refusals() {
        let dir = build(r#"{"url": "https://auth.internal/pop3"}"#).unwrap();
        assert_eq!(
            dir.config(),
            &directory_http::HttpConfig::new("https://auth.internal/pop3")
        );
        let dir = build(r#"{"url": "http://a/", "cache_ttl": "0s", "timeout": "500ms"}"#).unwrap();
        assert_eq!(dir.config().cache_ttl, Duration::ZERO);
        assert_eq!(dir.config().timeout, Duration::from_millis(500));
        let e = build(r#"{"url": "ftp://a/"}"#).unwrap_err();
        assert!(e.starts_with("tenants[0].auth.url: "), "{e}");
        let e = build(r#"{"url": "http://a/", "token": "x"}"#).unwrap_err();
        assert!(e.contains("unknown field `token`"), "{e}");
    }
}
