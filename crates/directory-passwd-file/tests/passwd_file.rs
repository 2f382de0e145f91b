//! The passwd-file directory: parsing, lookups, reloads, APOP.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use directory_passwd_file::PasswdFile;
use popgate_auth::{Directory, Login, UserInfo};

// doveadm pw -s BLF-CRYPT -r 4 -p secret
const BCRYPT_SECRET: &str =
    "{BLF-CRYPT}$2y$04$5D.aL.fV85YiD13oXmGByuH.V3eCTJWidNypC2058qMqJQ3PXvYDu";
// openssl passwd -6 -salt saltsalt secret
const SHA512_SECRET: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

fn login<'a>(local: &'a str, domain: &'a str) -> Login<'a> {
    Login::new(local, domain)
}

fn write(path: &Path, text: &str) {
    // Replace atomically, as deploy tools and Kubernetes do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn file_with(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.passwd");
    write(&path, text);
    (dir, path)
}

/// Collects log output while `f` runs on this thread.
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

const FILE: &str = "\
# acme's users
\n
alice@acme.example:{PLAIN}alicepw
Bob@Acme.Example:{BLF-CRYPT}$2y$04$5D.aL.fV85YiD13oXmGByuH.V3eCTJWidNypC2058qMqJQ3PXvYDu:1000:1000:Bob B:/home/bob:/bin/false:popgate_max_sessions=2 popgate_login_delay=300 userdb_quota_rule=*:storage=1G
carol:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1::::::
   # indented comment
dave@acme.example:{PLAIN}davepw::::::nopassword
erin@acme.example:{PLAIN}erinpw::::::nologin proxy=y host=10.0.0.1
frank@acme.example:{PLAIN}frankpw::::::allow_nets=10.0.0.0/8
grace@acme.example:{PBKDF2}$1$c2FsdHNhbHQ$1000$c2VjcmV0c2VjcmV0c2VjcmV0
heidi@acme.example:
alice@acme.example:{PLAIN}second-alice
this line has no colon
:{PLAIN}nobody
two@ats@acme.example:{PLAIN}x
ivan@acme.example:{PLAIN}ivanpw::::::popgate_max_sessions=lots
judy@acme.example:{PLAIN}judypw\r
kim@acme.example:{PLAIN}kimpw::::::allow_nets=nonsense,192.0.2.0/24
";

#[tokio::test]
async fn parses_dovecot_file() {
    let (_dir, path) = file_with(FILE);
    let (dir, logs) = logs_of(|| PasswdFile::open(&path).unwrap());
    assert_eq!(dir.kind(), "passwd-file");
    assert_eq!(dir.skipped_lines(), 3, "{logs}");
    assert_eq!(dir.user_count(), 11);

    // Lines are named, hashes never printed.
    for line in ["line=14", "line=15", "line=16"] {
        assert!(logs.contains(line), "{line}: {logs}");
    }
    assert!(
        logs.contains("PBKDF2") && logs.contains("grace@acme.example"),
        "{logs}"
    );
    assert!(
        logs.contains("line=19") && logs.contains("\"nonsense\" is not an IP address"),
        "{logs}"
    );
    assert!(logs.contains("popgate_max_sessions"), "{logs}");
    assert!(
        logs.contains("line=13") && logs.contains("first line wins"),
        "{logs}"
    );
    for secret in [
        "c2VjcmV0",
        "nobody",
        "second-alice",
        "5D.aL",
        "alicepw",
        "$6$",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked: {logs}");
    }

    let ok = |u| Some(u);
    assert_eq!(
        dir.verify(login("alice", "acme.example"), b"alicepw")
            .await
            .unwrap(),
        ok(UserInfo::default())
    );
    assert_eq!(
        dir.verify(login("alice", "acme.example"), b"second-alice")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        dir.verify(login("bob", "acme.example"), b"secret")
            .await
            .unwrap(),
        ok(UserInfo {
            login_delay: Some(300),
            mailbox: None,
            location: None,
        })
    );
    // Bare users match any domain of the tenant, and no domain at all.
    assert_eq!(
        dir.verify(login("carol", "acme.example"), b"secret")
            .await
            .unwrap(),
        ok(UserInfo::default())
    );
    assert_eq!(
        dir.verify(login("carol", ""), b"secret").await.unwrap(),
        ok(UserInfo::default())
    );
    assert_eq!(
        dir.verify(login("alice", ""), b"alicepw").await.unwrap(),
        None
    );
    assert_eq!(
        dir.verify(login("alice", "other.example"), b"alicepw")
            .await
            .unwrap(),
        None
    );
    // Disabled: nopassword, nologin, empty password; frank is refused from
    // outside allow_nets (no address at all here).
    for user in ["dave", "erin", "frank", "heidi"] {
        let pw = format!("{user}pw");
        assert_eq!(
            dir.verify(login(user, "acme.example"), pw.as_bytes())
                .await
                .unwrap(),
            None,
            "{user}"
        );
    }
    let from = |ip: &str| ip.parse::<std::net::IpAddr>().unwrap();
    assert_eq!(
        dir.verify(
            login("frank", "acme.example").with_client(from("10.9.8.7")),
            b"frankpw"
        )
        .await
        .unwrap(),
        ok(UserInfo::default())
    );
    // A bad entry matches nothing; the good one still works.
    for (ip, admitted) in [("192.0.2.9", true), ("127.0.0.1", false)] {
        let who = login("kim", "acme.example").with_client(from(ip));
        assert_eq!(
            dir.verify(who, b"kimpw").await.unwrap().is_some(),
            admitted,
            "{ip}"
        );
    }
    // Unknown scheme: the login fails, no error reaches the session.
    assert_eq!(
        dir.verify(login("grace", "acme.example"), b"secret")
            .await
            .unwrap(),
        None
    );
    // A bad extra field is ignored, the user stays; CRLF line endings work.
    assert_eq!(
        dir.verify(login("ivan", "acme.example"), b"ivanpw")
            .await
            .unwrap(),
        ok(UserInfo::default())
    );
    assert_eq!(
        dir.verify(login("judy", "acme.example"), b"judypw")
            .await
            .unwrap(),
        ok(UserInfo::default())
    );
}

#[tokio::test]
async fn user_names_compare_in_lower_case() {
    let (_dir, path) = file_with("MiXeD@Acme.Example:{PLAIN}pw\n");
    let dir = PasswdFile::open(&path).unwrap();
    assert!(
        dir.verify(login("mixed", "acme.example"), b"pw")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        dir.verify(login("MIXED", "ACME.EXAMPLE"), b"pw")
            .await
            .unwrap()
            .is_some()
    );
    // Passwords are case-sensitive.
    assert!(
        dir.verify(login("mixed", "acme.example"), b"PW")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn reloads_when_the_file_changes() {
    let (_dir, path) = file_with("alice:{PLAIN}old\n");
    let dir = PasswdFile::open(&path)
        .unwrap()
        .with_reload_interval(Duration::ZERO);
    assert!(
        dir.verify(login("alice", "x"), b"old")
            .await
            .unwrap()
            .is_some()
    );

    write(
        &path,
        &format!("alice:{SHA512_SECRET}\nbob:{{PLAIN}}bobpw\n"),
    );
    assert!(
        dir.verify(login("alice", "x"), b"old")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        dir.verify(login("alice", "x"), b"secret")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        dir.verify(login("bob", "x"), b"bobpw")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(dir.user_count(), 2);

    // Edited in place, same size: mtime/ctime tell.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        &path,
        format!("alice:{SHA512_SECRET}\nbob:{{PLAIN}}bobPW\n"),
    )
    .unwrap();
    assert!(
        dir.verify(login("bob", "x"), b"bobPW")
            .await
            .unwrap()
            .is_some()
    );

    // Gone or unreadable: the previous contents stay.
    std::fs::remove_file(&path).unwrap();
    assert!(
        dir.verify(login("bob", "x"), b"bobPW")
            .await
            .unwrap()
            .is_some()
    );
    std::fs::create_dir(&path).unwrap();
    assert!(
        dir.verify(login("bob", "x"), b"bobPW")
            .await
            .unwrap()
            .is_some()
    );
    std::fs::remove_dir(&path).unwrap();

    // And back.
    write(&path, "carol:{PLAIN}c\n");
    assert!(
        dir.verify(login("carol", "x"), b"c")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        dir.verify(login("bob", "x"), b"bobPW")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn checks_for_changes_at_most_once_per_interval() {
    let (_dir, path) = file_with("alice:{PLAIN}old\n");
    let dir = PasswdFile::open(&path)
        .unwrap()
        .with_reload_interval(Duration::from_secs(3600));
    write(&path, "alice:{PLAIN}new\n");
    assert!(
        dir.verify(login("alice", "x"), b"old")
            .await
            .unwrap()
            .is_some()
    );
}

#[test]
fn open_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.passwd");
    let err = PasswdFile::open(&missing).unwrap_err().to_string();
    assert!(
        err.contains("missing.passwd") && err.contains("No such file"),
        "{err}"
    );
    let err = PasswdFile::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("directory"), "{err}");
}

#[tokio::test]
async fn apop_needs_a_plain_entry() {
    let (_dir, path) = file_with(&format!("bob:{BCRYPT_SECRET}\n"));
    let dir = PasswdFile::open(&path).unwrap();
    assert!(!dir.supports_apop());

    let (_dir2, path) = file_with(&format!(
        "bob:{BCRYPT_SECRET}\nalice@acme.example:{{PLAIN}}tanstaaf::::::popgate_login_delay=60\nzed:{{PLAIN}}tanstaaf::::::nologin\n"
    ));
    let dir = PasswdFile::open(&path).unwrap();
    assert!(dir.supports_apop());
    let ts = "<1896.697170952@dbc.mtview.ca.us>";
    let digest = "c4c9334bac560ecc979e58001b3e22fb"; // RFC 1939's example
    let alice = login("alice", "acme.example");
    assert_eq!(
        dir.verify_apop(alice, ts, digest).await.unwrap(),
        Some(UserInfo {
            login_delay: Some(60),
            mailbox: None,
            location: None,
        })
    );
    assert!(
        dir.verify_apop(alice, ts, &digest.to_uppercase())
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        dir.verify_apop(alice, "<other@ts>", digest)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        dir.verify_apop(alice, ts, "c4c9334bac560ecc979e58001b3e22")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        dir.verify_apop(login("nobody", ""), ts, digest)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        dir.verify_apop(login("zed", ""), ts, digest)
            .await
            .unwrap()
            .is_none()
    );
    // Not PLAIN: APOP cannot work, even with the digest of the password.
    assert!(
        dir.verify_apop(login("bob", ""), ts, digest)
            .await
            .unwrap()
            .is_none()
    );
}
