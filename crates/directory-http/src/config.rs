//! The settings of an HTTP auth hook and their checks.

use std::fmt;
use std::time::Duration;

/// Where the auth service is and how long to trust its answers.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `http://` or `https://` URL that requests are POSTed to.
    pub url: String,
    /// The most one request (connect, send, answer) may take.
    pub timeout: Duration,
    /// How long an "allow" is reused for the same login, password and
    /// client without asking again; zero: never.
    pub cache_ttl: Duration,
    /// Sent as `Authorization: Bearer ...` when set.
    pub bearer_token: Option<String>,
}

impl HttpConfig {
    /// The defaults around a URL: 5 s timeout, 30 s cache, no token.
    pub fn new(url: impl Into<String>) -> Self {
        HttpConfig {
            url: url.into(),
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(30),
            bearer_token: None,
        }
    }

    /// Checks the settings; an error names the field and what is wrong.
    pub fn validate(&self) -> Result<hyper::Uri, (&'static str, String)> {
        let uri: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| ("url", format!("{:?} is not a URL: {e}", self.url)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err((
                "url",
                format!("{:?} is not an http:// or https:// URL", self.url),
            ));
        }
        match uri.authority() {
            None => return Err(("url", "has no host".into())),
            Some(a) if a.as_str().contains('@') => {
                return Err((
                    "url",
                    "must not hold credentials (user:password@); use bearer_token".into(),
                ));
            }
            Some(_) => {}
        }
        if self.timeout.is_zero() {
            return Err(("timeout", "must be more than 0".into()));
        }
        if let Some(token) = &self.bearer_token {
            let printable = token.bytes().all(|b| b.is_ascii_graphic());
            if token.is_empty() || !printable {
                return Err((
                    "bearer_token",
                    "must be printable ASCII without spaces, and not empty".into(),
                ));
            }
        }
        Ok(uri)
    }
}

impl fmt::Debug for HttpConfig {
    /// Without the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "…"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_field() {
        let field = |c: HttpConfig| c.validate().unwrap_err().0;
        assert!(
            HttpConfig::new("https://auth.internal/pop3")
                .validate()
                .is_ok()
        );
        assert_eq!(field(HttpConfig::new("ftp://x/")), "url");
        assert_eq!(field(HttpConfig::new("not a url")), "url");
        assert_eq!(field(HttpConfig::new("/pop3")), "url");
        assert_eq!(field(HttpConfig::new("https://u:p@auth/")), "url");
        let c = HttpConfig {
            timeout: Duration::ZERO,
            ..HttpConfig::new("http://a/")
        };
        assert_eq!(field(c), "timeout");
        let c = HttpConfig {
            bearer_token: Some("two words".into()),
            ..HttpConfig::new("http://a/")
        };
        assert_eq!(field(c), "bearer_token");
    }

    #[test]
    fn debug_hides_the_token() {
        let c = HttpConfig {
            bearer_token: Some("s3cr3t-token".into()),
            ..HttpConfig::new("http://a/")
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
