//! The three real stores, each on a service of its own for the test: a
//! Maildir in a temporary folder, a fresh schema in the shared PostgreSQL,
//! an s3s-fs on a free port. And two broken stores, to see the model
//! catch them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use popgate_store::{
    ExpungeReport, MailStore, MailboxId, Maildrop, MessageInfo, MessageStream, StoreError,
};

pub fn maildir(dir: &tempfile::TempDir) -> Arc<dyn MailStore> {
    let config = store_maildir::MaildirConfig {
        path_template: format!("{}/%d/%n/Maildir", dir.path().display()),
        ..Default::default()
    };
    Arc::new(store_maildir::MaildirStore::new(config).expect("maildir config"))
}

/// A migrated schema of its own in the test database; dropped on `drop`.
pub struct Pg {
    pub config: backend_postgres::PgConfig,
}

impl Pg {
    pub async fn new() -> Pg {
        let url = std::env::var("POPGATE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut config = backend_postgres::PgConfig::new(url);
        config.schema = format!("t_model_{}_{nanos}", std::process::id());
        backend_postgres::migrate(&config)
            .await
            .expect("migrating the test schema (is PostgreSQL on 127.0.0.1:5432?)");
        Pg { config }
    }

    pub fn store(&self) -> Arc<dyn MailStore> {
        Arc::new(backend_postgres::PgStore::connect_lazy(&self.config).expect("pool"))
    }

    pub async fn drop(self) {
        let pool = self.config.pool().expect("pool");
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.config.schema);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect("dropping the test schema");
        pool.close().await;
    }
}

/// s3s-fs on a free port over a temporary folder, with the bucket `mail`
/// (a folder to s3s-fs). `scripts/s3-server install` puts it in place.
pub struct S3 {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

const KEY: &str = "model-test";
const SECRET: &str = "model-test-secret";

impl S3 {
    pub fn start() -> S3 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mail")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        S3 {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn store(&self) -> Arc<dyn MailStore> {
        let mut c = store_s3::S3Config::new("mail");
        c.endpoint = Some(format!("http://127.0.0.1:{}", self.port));
        c.region = Some("us-east-1".into());
        c.force_path_style = true;
        c.credentials = Some(store_s3::StaticCredentials {
            access_key_id: KEY.into(),
            secret_access_key: SECRET.into(),
        });
        Arc::new(store_s3::S3Store::new(c).expect("s3 config"))
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS_BIN") {
        return p.into();
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    match home.map(|h| h.join("bin/s3s-fs")) {
        Some(p) if p.is_file() => p,
        _ => panic!("s3s-fs is not installed: run `scripts/s3-server install` (or set S3S_FS_BIN)"),
    }
}

/// How a broken store lies.
#[derive(Clone, Copy)]
pub enum Flaw {
    /// LIST and STAT say one octet more than RETR sends.
    SizePlusOne,
    /// QUIT's expunge reports success and deletes nothing.
    ForgetsDeletes,
}

/// An in-memory store with a flaw.
pub struct Broken {
    inner: popgate_store::MemoryStore,
    flaw: Flaw,
}

impl Broken {
    pub fn store(flaw: Flaw) -> Arc<dyn MailStore> {
        Arc::new(Broken {
            inner: popgate_store::MemoryStore::new(),
            flaw,
        })
    }
}

struct BrokenDrop {
    inner: Box<dyn Maildrop>,
    messages: Vec<MessageInfo>,
    flaw: Flaw,
}

#[async_trait]
impl MailStore for Broken {
    fn backend(&self) -> &'static str {
        "broken"
    }
    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        let inner = self.inner.open(mailbox).await?;
        let mut messages = inner.messages().to_vec();
        if let Flaw::SizePlusOne = self.flaw {
            messages.iter_mut().for_each(|m| m.size += 1);
        }
        Ok(Box::new(BrokenDrop {
            inner,
            messages,
            flaw: self.flaw,
        }))
    }
    async fn append(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
    ) -> Result<String, StoreError> {
        self.inner.append(mailbox, message).await
    }
}

#[async_trait]
impl Maildrop for BrokenDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }
    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError> {
        self.inner.fetch(index).await
    }
    async fn expunge(
        &mut self,
        indices: &[usize],
        fence: u64,
    ) -> Result<ExpungeReport, StoreError> {
        match self.flaw {
            Flaw::ForgetsDeletes => Ok(ExpungeReport {
                deleted: indices.len(),
                already_gone: 0,
            }),
            Flaw::SizePlusOne => self.inner.expunge(indices, fence).await,
        }
    }
}
