//! The HTTP directory runs the directory conformance kit. The auth service
//! is a hyper server in the test that answers from a `MemoryDirectory`
//! holding the kit's users: it checks the password, `allow_nets` and the
//! disabled flag, and returns LOGIN-DELAY, as a provider's service would.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use directory_http::{HttpConfig, HttpDirectory};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use popgate_auth::conformance::{self, Fixture, KitUser};
use popgate_auth::hashing::Hashing;
use popgate_auth::memory::{MemoryDirectory, MemoryUser};
use popgate_auth::nets::AllowNets;
use popgate_auth::{Directory, Login};
use serde_json::{Value, json};

/// Answers one request of the hook protocol from `users`.
async fn answer(users: &MemoryDirectory, request: &Value) -> Value {
    let text = |k: &str| request[k].as_str().unwrap_or_default().to_owned();
    let (local, domain) = (text("local"), text("domain"));
    let mut login = Login::new(&local, &domain);
    if let Some(client) = request["client"].as_str() {
        login = login.with_client(client.parse::<IpAddr>().unwrap());
    }
    match request["request"].as_str() {
        Some("auth") => match users
            .verify(login, text("password").as_bytes())
            .await
            .unwrap()
        {
            Some(info) => json!({"allow": true, "login_delay": info.login_delay}),
            None => json!({"allow": false}),
        },
        Some("lookup") => json!({"exists": users.find_user(login).await.unwrap().is_some()}),
        _ => json!({}),
    }
}

/// Serves the hook on a loopback port; returns its URL.
async fn serve(users: Arc<MemoryDirectory>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/pop3", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let users = users.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let users = users.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let request: Value = serde_json::from_slice(&body).unwrap();
                        let out = answer(&users, &request).await.to_string();
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(out))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    url
}

fn directory(url: String) -> Arc<dyn Directory> {
    let config = HttpConfig {
        timeout: Duration::from_secs(5),
        ..HttpConfig::new(url)
    };
    Arc::new(HttpDirectory::new(config, "kit").unwrap())
}

struct Hook;

#[async_trait]
impl Fixture for Hook {
    async fn directory(&mut self, users: &[KitUser], hashing: Hashing) -> Arc<dyn Directory> {
        let memory = MemoryDirectory::with_hashing(hashing);
        for u in users {
            let mut user = MemoryUser::new(u.stored.clone());
            if !u.enabled {
                user = user.disabled();
            }
            if let Some(nets) = &u.allow_nets {
                user = user.allow_nets(AllowNets::parse_strict(nets).unwrap());
            }
            if let Some(delay) = u.login_delay {
                user = user.login_delay(delay);
            }
            memory.insert(&u.login, user);
        }
        directory(serve(Arc::new(memory)).await)
    }

    /// A port nobody listens on.
    async fn unreachable(&mut self, _: Hashing) -> Option<Arc<dyn Directory>> {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/pop3", closed.local_addr().unwrap());
        drop(closed);
        Some(directory(url))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hook_passes_the_kit() {
    conformance::run(&mut Hook).await;
}
