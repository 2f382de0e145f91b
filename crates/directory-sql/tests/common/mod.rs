//! What the SQL directory's tests share: a private MariaDB, started by the
//! test on a free port with a temporary data directory and stopped when
//! dropped; the kit's users as Postfix Admin `mailbox` rows; an SQL
//! directory over them.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use directory_sql::{SqlConfig, SqlDirectory};
use popgate_auth::Hashing;
use popgate_auth::conformance::KitUser;

/// A free TCP port on 127.0.0.1 (nobody listens on it once returned).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A MariaDB server of the test's own: `root` without a password on
/// 127.0.0.1.
pub struct MariaDb {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: {e} (is mariadb-server installed? scripts/test installs it)")
    });
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl MariaDb {
    /// Initialises a data directory and starts `mariadbd` on a free port;
    /// returns once it accepts connections.
    pub fn start() -> MariaDb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let user = if is_root() {
            "--user=root"
        } else {
            "--no-defaults"
        };
        // Two mariadb-install-db at once (this file's tests run in
        // parallel) fail now and then in the bootstrap SQL: one at a time.
        static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
        run(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(user)
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db"),
            "mariadb-install-db",
        );
        let port = free_port();
        let p = |name: &str| dir.path().join(name).display().to_string();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", p("sock")))
            .arg(format!("--pid-file={}", p("pid")))
            .arg(format!("--log-error={}", p("error.log")))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--innodb-buffer-pool-size=16M")
            .arg("--skip-log-bin")
            .arg(user)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd (is mariadb-server installed? scripts/test installs it)");
        let mut db = MariaDb { child, port, dir };
        db.wait_ready();
        db
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mariadbd exited ({status}): {}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "mariadbd not listening after 60 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The URL of database `db` as root.
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server now (as an outage does).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Postfix Admin's `mailbox` table (its MySQL schema), plus the two columns
/// a provider adds for popgate's per-user fields.
pub const MAILBOX_MYSQL: &str = "CREATE TABLE mailbox (
    username varchar(255) NOT NULL,
    password varchar(255) NOT NULL,
    name varchar(255) CHARACTER SET utf8mb4 NOT NULL DEFAULT '',
    maildir varchar(255) NOT NULL DEFAULT '',
    quota bigint NOT NULL DEFAULT 0,
    local_part varchar(255) NOT NULL,
    domain varchar(255) NOT NULL,
    created datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
    modified datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
    active tinyint(1) NOT NULL DEFAULT 1,
    allow_nets varchar(255) NULL,
    login_delay int NULL,
    PRIMARY KEY (username),
    KEY domain (domain)
) DEFAULT CHARSET=latin1";

/// The same table in PostgreSQL (Postfix Admin's pgsql schema).
pub const MAILBOX_POSTGRES: &str = "CREATE TABLE mailbox (
    username varchar(255) NOT NULL PRIMARY KEY,
    password varchar(255) NOT NULL,
    name varchar(255) NOT NULL DEFAULT '',
    maildir varchar(255) NOT NULL DEFAULT '',
    quota bigint NOT NULL DEFAULT 0,
    local_part varchar(255) NOT NULL,
    domain varchar(255) NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    modified timestamptz NOT NULL DEFAULT now(),
    active boolean NOT NULL DEFAULT true,
    allow_nets varchar(255) NULL,
    login_delay int NULL
)";

/// The kit's query on that table: disabled users are rows with active = 0,
/// so that they exist.
pub const KIT_QUERY: &str = "SELECT username AS user, password, active AS enabled, allow_nets, \
     login_delay FROM mailbox WHERE username = '%u'";

/// A `mailbox` row.
pub struct MailboxRow {
    pub username: String,
    pub password: String,
    pub local_part: String,
    pub domain: String,
    pub active: bool,
    pub allow_nets: Option<String>,
    pub login_delay: Option<i32>,
}

/// One row per kit user, as Postfix Admin writes them.
pub fn mailbox_rows(users: &[KitUser]) -> Vec<MailboxRow> {
    users
        .iter()
        .map(|u| {
            let (local, domain) = u.login.split_once('@').unwrap();
            MailboxRow {
                username: u.login.clone(),
                password: u.stored.clone(),
                local_part: local.to_owned(),
                domain: domain.to_owned(),
                active: u.enabled,
                allow_nets: u.allow_nets.clone(),
                login_delay: u.login_delay.map(|d| i32::try_from(d).unwrap()),
            }
        })
        .collect()
}

/// The kit's listing: Postfix Admin's `username` is the whole login, its
/// `domain` beside it (Dovecot's username + domain form).
pub const KIT_ITERATE: &str = "SELECT username, domain FROM mailbox";

/// An SQL directory on `url` with `query`, the kit's `iterate_query`, and
/// short timeouts.
pub fn directory(url: &str, query: &str, hashing: Hashing) -> SqlDirectory {
    let mut config = SqlConfig::new(url, query);
    config.iterate_query = Some(KIT_ITERATE.into());
    config.connect_timeout = Duration::from_millis(2000);
    config.query_timeout = Duration::from_millis(2000);
    SqlDirectory::connect_lazy(&config, "kit", hashing).unwrap()
}

/// A directory of a database nobody serves.
pub fn unreachable(scheme: &str, hashing: Hashing) -> SqlDirectory {
    let url = format!("{scheme}://root@127.0.0.1:{}/nothing", free_port());
    let mut config = SqlConfig::new(url, KIT_QUERY);
    config.connect_timeout = Duration::from_millis(300);
    config.query_timeout = Duration::from_millis(1000);
    SqlDirectory::connect_lazy(&config, "kit", hashing).unwrap()
}
