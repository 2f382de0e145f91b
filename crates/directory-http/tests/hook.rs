//! The HTTP directory against a real HTTP server started by the test: a
//! hyper server on a loopback port that answers as each test says and
//! records what it was sent.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use directory_http::{HttpConfig, HttpDirectory};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use popgate_auth::{Directory, Login, UserInfo};
use serde_json::{Value, json};

/// What the server answers to a request: status, body, delay.
type Answer = Arc<dyn Fn(&Value) -> (u16, String, Duration) + Send + Sync>;

/// Each request's JSON and its Authorization header.
type Seen = Arc<Mutex<Vec<(Value, Option<String>)>>>;

struct Hook {
    url: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Hook {
    async fn start(
        answer: impl Fn(&Value) -> (u16, String, Duration) + Send + Sync + 'static,
    ) -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/pop3", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let answer: Answer = Arc::new(answer);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (answer, log) = (answer.clone(), log.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (answer, log) = (answer.clone(), log.clone());
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned());
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let value: Value = serde_json::from_slice(&body).unwrap();
                            log.lock().unwrap().push((value.clone(), auth));
                            let (status, body, delay) = answer(&value);
                            tokio::time::sleep(delay).await;
                            let response = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Hook { url, seen, task }
    }

    fn requests(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(v, _)| v.clone())
            .collect()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Allows bob with "secret" (login_delay 60), denies everything else;
/// bob exists.
fn bob(request: &Value) -> (u16, String, Duration) {
    let body = match request["request"].as_str() {
        Some("auth") => {
            let allow = request["user"] == "bob@example.org" && request["password"] == "secret";
            if allow {
                json!({"allow": true, "login_delay": 60, "extra": "ignored"})
            } else {
                json!({"allow": false, "reason": "bad credentials"})
            }
        }
        Some("lookup") => json!({"exists": request["user"] == "bob@example.org"}),
        _ => json!({}),
    };
    (200, body.to_string(), Duration::ZERO)
}

fn directory(url: &str, cache_ttl: Duration) -> HttpDirectory {
    let config = HttpConfig {
        cache_ttl,
        timeout: Duration::from_millis(500),
        ..HttpConfig::new(url)
    };
    HttpDirectory::new(config, "acme").unwrap()
}

fn login() -> Login<'static> {
    Login::new("bob", "example.org").with_client("192.0.2.7".parse::<IpAddr>().unwrap())
}

#[tokio::test]
async fn allow_and_deny() {
    let hook = Hook::start(bob).await;
    let dir = directory(&hook.url, Duration::ZERO);
    let allowed = dir.verify(login(), b"secret").await.unwrap();
    assert_eq!(
        allowed,
        Some(UserInfo {
            login_delay: Some(60),
            mailbox: None,
            location: None,
        })
    );
    assert_eq!(dir.verify(login(), b"wrong").await.unwrap(), None);
    let carol = Login::new("carol", "example.org");
    assert_eq!(dir.verify(carol, b"secret").await.unwrap(), None);
    assert!(dir.find_user(login()).await.unwrap().is_some());
    assert!(dir.find_user(carol).await.unwrap().is_none());
    dir.ping().await.unwrap();
    let sent = hook.requests();
    assert_eq!(
        sent[0],
        json!({"request": "auth", "tenant": "acme", "user": "bob@example.org", "local": "bob",
               "domain": "example.org", "password": "secret", "client": "192.0.2.7",
               "mechanism": "plain"})
    );
    assert_eq!(
        sent[3],
        json!({"request": "lookup", "tenant": "acme", "user": "bob@example.org", "local": "bob",
               "domain": "example.org"})
    );
    assert_eq!(
        sent.last().unwrap(),
        &json!({"request": "ping", "tenant": "acme"})
    );
    // A login that belongs to no tenant costs a round trip, but its
    // password is not sent.
    dir.verify_unknown(b"guess").await.unwrap();
    let last = hook.requests().pop().unwrap();
    assert_eq!(
        (last["user"].as_str(), last["password"].as_str()),
        (Some(""), Some(""))
    );
    // A password that JSON cannot carry is refused without a request.
    let before = hook.requests().len();
    assert_eq!(dir.verify(login(), b"\xff\xfe").await.unwrap(), None);
    assert_eq!(hook.requests().len(), before);
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_never_shown() {
    let hook = Hook::start(bob).await;
    let config = HttpConfig {
        bearer_token: Some("t0ken-s3cret".into()),
        ..HttpConfig::new(hook.url.clone())
    };
    let dir = HttpDirectory::new(config, "acme").unwrap();
    assert!(dir.verify(login(), b"secret").await.unwrap().is_some());
    let auth = hook.seen.lock().unwrap()[0].1.clone();
    assert_eq!(auth.as_deref(), Some("Bearer t0ken-s3cret"));
    assert!(!format!("{dir:?}").contains("t0ken"));
}

#[tokio::test]
async fn server_errors_and_bad_answers_are_auth_errors() {
    let hook = Hook::start(|r| match r["password"].as_str() {
        Some("500") => (500, "{}".into(), Duration::ZERO),
        Some("401") => (401, "{}".into(), Duration::ZERO),
        Some("html") => (200, "<html>".into(), Duration::ZERO),
        _ => (200, "{\"allowed\": true}".into(), Duration::ZERO),
    })
    .await;
    let dir = directory(&hook.url, Duration::from_secs(60));
    for password in ["500", "401", "html", "other"] {
        let e = dir
            .verify(login(), password.as_bytes())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&hook.url), "{e}");
        assert!(!e.contains(&format!("\"{password}\"")), "{e}");
    }
    // None of them was cached: each is asked again.
    let before = hook.requests().len();
    assert!(dir.verify(login(), b"500").await.is_err());
    assert_eq!(hook.requests().len(), before + 1);
}

#[tokio::test]
async fn a_slow_or_absent_service_is_an_auth_error_in_bounded_time() {
    let hook = Hook::start(|_| (200, "{\"allow\": true}".into(), Duration::from_secs(30))).await;
    let dir = directory(&hook.url, Duration::ZERO);
    let slow = tokio::time::timeout(Duration::from_secs(10), dir.verify(login(), b"secret"))
        .await
        .expect("the timeout bounds the login");
    assert!(slow.unwrap_err().to_string().contains("no answer within"));
    drop(hook);
    // Nothing listens here any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = format!("http://{}/pop3", closed.local_addr().unwrap());
    drop(closed);
    let dir = directory(&refused, Duration::ZERO);
    let e = dir
        .verify(login(), b"secret")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("onnect"), "{e}");
    assert!(dir.ping().await.is_err());
}

#[tokio::test]
async fn an_allow_is_cached_a_deny_is_not() {
    let hook = Hook::start(bob).await;
    let dir = directory(&hook.url, Duration::from_secs(60));
    assert!(dir.verify(login(), b"secret").await.unwrap().is_some());
    assert_eq!(
        dir.verify(login(), b"secret").await.unwrap(),
        Some(UserInfo {
            login_delay: Some(60),
            mailbox: None,
            location: None,
        }),
        "the cached answer keeps its overrides"
    );
    assert_eq!(hook.requests().len(), 1, "two logins, one request");
    // Another password, another client: asked again.
    assert!(dir.verify(login(), b"wrong").await.unwrap().is_none());
    assert!(dir.verify(login(), b"wrong").await.unwrap().is_none());
    let elsewhere = Login::new("bob", "example.org").with_client("198.51.100.1".parse().unwrap());
    assert!(dir.verify(elsewhere, b"secret").await.unwrap().is_some());
    assert_eq!(hook.requests().len(), 4);
    // Without a cache, every login asks.
    let uncached = directory(&hook.url, Duration::ZERO);
    uncached.verify(login(), b"secret").await.unwrap();
    uncached.verify(login(), b"secret").await.unwrap();
    assert_eq!(hook.requests().len(), 6);
}
