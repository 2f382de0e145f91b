//! A loopback S3 server (s3s-fs) for the tests, on a free port and a
//! temporary folder, and a plain client to change the bucket behind the
//! store's back. `scripts/s3-server install` puts s3s-fs in place.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use store_s3::{S3Config, StaticCredentials};

pub mod seaweed;

pub const ACCESS_KEY: &str = "store-s3-test";
pub const SECRET_KEY: &str = "store-s3-test-secret";
pub const BUCKET: &str = "mail";

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS_BIN") {
        return p.into();
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(p) = cargo_home.map(|h| h.join("bin/s3s-fs"))
        && p.is_file()
    {
        return p;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("s3s-fs");
        if p.is_file() {
            return p;
        }
    }
    panic!("s3s-fs is not installed: run `scripts/s3-server install` (or set S3S_FS_BIN)");
}

pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs and creates the bucket.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = S3Server {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        s.run();
        s.client()
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("create bucket");
        s
    }

    fn run(&mut self) {
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server; its data stays for [`S3Server::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A store configuration for this server (short timeouts, small pages).
    pub fn config(&self) -> S3Config {
        config_for(&self.endpoint())
    }

    pub fn client(&self) -> Client {
        client_for(&self.endpoint())
    }

    pub async fn put(&self, key: &str, body: &[u8]) {
        self.client()
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body.to_vec().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self
            .client()
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
        {
            Ok(r) => Some(r.body.collect().await.unwrap().to_vec()),
            Err(_) => None,
        }
    }

    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                out.push(o.key().unwrap().to_owned());
            }
        }
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A store configuration for a loopback S3 server (short timeouts).
pub fn config_for(endpoint: &str) -> S3Config {
    let mut c = S3Config::new(BUCKET);
    c.endpoint = Some(endpoint.into());
    c.region = Some("us-east-1".into());
    c.force_path_style = true;
    c.credentials = Some(StaticCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
    });
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(10);
    c.max_attempts = 2;
    c
}

/// A plain S3 client for a loopback server, to change the bucket behind
/// the store's back.
pub fn client_for(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}
