//! The passwd-file directory runs the directory conformance kit: the kit's
//! users written as passwd-file lines.

use std::sync::Arc;

use async_trait::async_trait;
use directory_passwd_file::PasswdFile;
use popgate_auth::Directory;
use popgate_auth::conformance::{self, Fixture, KitUser};
use popgate_auth::hashing::Hashing;

struct File {
    dir: tempfile::TempDir,
}

/// One user as a passwd-file line, with Dovecot's extra fields.
fn line(user: &KitUser) -> String {
    let mut extra = Vec::new();
    if !user.enabled {
        extra.push("nologin".to_owned());
    }
    if let Some(nets) = &user.allow_nets {
        extra.push(format!("allow_nets={}", nets.replace(' ', "")));
    }
    if let Some(delay) = user.login_delay {
        extra.push(format!("popgate_login_delay={delay}"));
    }
    format!("{}:{}::::::{}\n", user.login, user.stored, extra.join(" "))
}

#[async_trait]
impl Fixture for File {
    async fn directory(&mut self, users: &[KitUser], hashing: Hashing) -> Arc<dyn Directory> {
        let path = self.dir.path().join("kit.passwd");
        let text: String = users.iter().map(line).collect();
        std::fs::write(&path, text).unwrap();
        let file = PasswdFile::open_with(&path, hashing).unwrap();
        assert!(file.warnings().is_empty(), "{:?}", file.warnings());
        Arc::new(file)
    }

    /// A passwd-file is read into memory: a file that goes away leaves the
    /// previous contents in use (tests/passwd_file.rs), so there is no
    /// outage to test.
    async fn unreachable(&mut self, _: Hashing) -> Option<Arc<dyn Directory>> {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_file_passes_the_kit() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(&mut File { dir }).await;
}
