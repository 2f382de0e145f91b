//! An HTTP auth service as a [`Directory`], in the spirit of nginx's
//! `auth_http`: popgate POSTs a JSON request to `url` and the service
//! answers JSON.
//!
//! A login (USER/PASS, AUTH PLAIN or AUTH LOGIN: the directory sees a
//! plaintext password whichever the client used, so `mechanism` is
//! `"plain"`):
//!
//! ```json
//! {"request": "auth", "tenant": "acme", "user": "bob@acme.example",
//!  "local": "bob", "domain": "acme.example", "password": "secret",
//!  "client": "192.0.2.7", "mechanism": "plain"}
//! ```
//!
//! is answered `200` with `{"allow": true}` (optionally `"login_delay":
//! 300`, RFC 2449 seconds, and `"user": "owner@domain"`, the mailbox the
//! login opens when it is not its own) or `{"allow": false}` (optionally `"reason":
//! "..."`, logged at info). `client` is `null` when there is no address.
//! Delivery asks `{"request": "lookup", "tenant", "user", "local",
//! "domain"}` and wants `{"exists": true|false}`; the readiness probe sends
//! `{"request": "ping"}` and wants any 2xx. Unknown answer fields are
//! ignored.
//!
//! Any other status, a body that is not that JSON (or above 64 KiB), a
//! refused connection or no answer within `timeout` is an [`AuthError`]
//! (`[SYS/TEMP]`), never a deny. An "allow" is reused for `cache_ttl`
//! for the same login, password and client ([`cache`]); denies are not
//! cached. A password that is not UTF-8 cannot be sent in JSON and is
//! refused without a request. The password and the bearer token are never
//! logged.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use popgate_auth::{AuthError, Directory, Login, UserInfo};
use serde::{Deserialize, Serialize};
use tracing::info;

mod cache;
mod config;

pub use config::HttpConfig;

/// The largest answer read.
const MAX_BODY: usize = 64 * 1024;

/// A tenant's logins checked by an HTTP service.
pub struct HttpDirectory {
    config: HttpConfig,
    tenant: String,
    uri: hyper::Uri,
    token: Option<HeaderValue>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    cache: cache::Cache,
}

#[derive(Serialize)]
struct Request<'a> {
    request: &'static str,
    tenant: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<Option<IpAddr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mechanism: Option<&'static str>,
}

impl<'a> Request<'a> {
    fn about(request: &'static str, tenant: &'a str) -> Self {
        Request {
            request,
            tenant,
            user: None,
            local: None,
            domain: None,
            password: None,
            client: None,
            mechanism: None,
        }
    }
}

#[derive(Deserialize)]
struct AuthAnswer {
    allow: bool,
    #[serde(default)]
    login_delay: Option<u32>,
    /// The mailbox the login opens, if not its own ([`UserInfo::mailbox`]).
    #[serde(default)]
    user: Option<String>,
    /// Where the user's mail is ([`UserInfo::location`]).
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct LookupAnswer {
    exists: bool,
    /// As in [`AuthAnswer`]: where a login's mail goes, for delivery.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    location: Option<String>,
}

impl HttpDirectory {
    /// Checks the settings; connects on first use. `tenant` is sent with
    /// every request. An error names the setting.
    pub fn new(
        config: HttpConfig,
        tenant: impl Into<String>,
    ) -> Result<Self, (&'static str, String)> {
        let uri = config.validate()?;
        let token = match &config.bearer_token {
            Some(t) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| ("bearer_token", "not a valid header value".to_owned()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let client = Client::builder(TokioExecutor::new()).build(connector(&uri)?);
        Ok(HttpDirectory {
            cache: cache::Cache::new(config.cache_ttl),
            config,
            tenant: tenant.into(),
            uri,
            token,
            client,
        })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    fn error(&self, what: impl std::fmt::Display) -> AuthError {
        AuthError(format!("HTTP auth hook {}: {what}", self.config.url))
    }

    /// POSTs `request` and reads the answer within the timeout: its
    /// status and body.
    async fn post(&self, request: &Request<'_>) -> Result<(hyper::StatusCode, Bytes), AuthError> {
        let body = serde_json::to_vec(request).map_err(|e| self.error(e))?;
        let mut req = hyper::Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("popgate/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.error(e))?;
        if let Some(token) = &self.token {
            req.headers_mut().insert(AUTHORIZATION, token.clone());
        }
        let exchange = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| self.error(error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| self.error(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| self.error(format!("no answer within {:?}", self.config.timeout)))?
    }

    /// POSTs and reads a 200 answer's JSON.
    async fn ask<T: for<'de> Deserialize<'de>>(
        &self,
        request: &Request<'_>,
    ) -> Result<T, AuthError> {
        let (status, body) = self.post(request).await?;
        if status != hyper::StatusCode::OK {
            return Err(self.error(format!("answered {status}")));
        }
        serde_json::from_slice(&body)
            .map_err(|e| self.error(format!("answer is not the expected JSON: {e}")))
    }
}

/// A hyper error and its causes ("client error (Connect): tcp connect
/// error: Connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// HTTPS with the system's roots, and plain HTTP.
fn connector(uri: &hyper::Uri) -> Result<HttpsConnector<HttpConnector>, (&'static str, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) if uri.scheme_str() == Some("https") => {
            return Err((
                "url",
                format!("cannot load the system's CA certificates: {e}"),
            ));
        }
        // Plain HTTP needs no roots.
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ("url", e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    };
    Ok(builder.https_or_http().enable_http1().build())
}

impl std::fmt::Debug for HttpDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDirectory")
            .field("config", &self.config)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// `local@domain`, or `local` without a domain.
fn whole(login: &Login<'_>) -> String {
    match login.domain {
        "" => login.local.to_owned(),
        domain => format!("{}@{domain}", login.local),
    }
}

#[async_trait]
impl Directory for HttpDirectory {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn verify(
        &self,
        login: Login<'_>,
        password: &[u8],
    ) -> Result<Option<UserInfo>, AuthError> {
        let Ok(text) = std::str::from_utf8(password) else {
            return Ok(None);
        };
        let user = whole(&login);
        let key = self.cache.key(&user, password, login.client);
        if let Some(info) = self.cache.get(&key) {
            return Ok(Some(info));
        }
        let request = Request {
            user: Some(&user),
            local: Some(login.local),
            domain: Some(login.domain),
            password: Some(text),
            client: Some(login.client),
            mechanism: Some("plain"),
            ..Request::about("auth", &self.tenant)
        };
        let answer: AuthAnswer = self.ask(&request).await?;
        if !answer.allow {
            if let Some(reason) = answer.reason {
                info!(tenant = %self.tenant, user, reason = %reason.chars().take(200).collect::<String>(), "HTTP auth hook denied the login");
            }
            return Ok(None);
        }
        let info = UserInfo {
            login_delay: answer.login_delay,
            mailbox: answer.user,
            location: answer.location.filter(|l| !l.trim().is_empty()),
        };
        self.cache.put(key, &info);
        Ok(Some(info))
    }

    /// The round trip of a login that fails, without sending the password
    /// of a login that belongs to no tenant: an empty user and password.
    async fn verify_unknown(&self, _password: &[u8]) -> Result<(), AuthError> {
        self.verify(Login::new("", ""), b"").await.map(drop)
    }

    async fn find_user(&self, login: Login<'_>) -> Result<Option<UserInfo>, AuthError> {
        let user = whole(&login);
        let request = Request {
            user: Some(&user),
            local: Some(login.local),
            domain: Some(login.domain),
            ..Request::about("lookup", &self.tenant)
        };
        let answer: LookupAnswer = self.ask(&request).await?;
        Ok(answer.exists.then(|| UserInfo {
            login_delay: None,
            mailbox: answer.user,
            location: answer.location.filter(|l| !l.trim().is_empty()),
        }))
    }

    async fn ping(&self) -> Result<(), AuthError> {
        let (status, _) = self.post(&Request::about("ping", &self.tenant)).await?;
        match status.is_success() {
            true => Ok(()),
            false => Err(self.error(format!("answered {status} to ping"))),
        }
    }
}
