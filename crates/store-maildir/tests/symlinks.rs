//! A Maildir serves regular files only: a symlink in new/ or cur/ (which
//! could point at another tenant's mail or at /etc/passwd) is never listed
//! nor read.

use popgate_store::{MailStore, MailboxId};
use store_maildir::{MaildirConfig, MaildirStore};

#[tokio::test]
async fn symlinks_are_not_mail() {
    let dir = tempfile::tempdir().unwrap();
    let store = MaildirStore::new(MaildirConfig {
        path_template: format!("{}/%d/%n/Maildir", dir.path().display()),
        ..MaildirConfig::default()
    })
    .unwrap();
    let mb = MailboxId::new("t", "bob", "a.example");
    let md = dir.path().join("a.example/bob/Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "Subject: not yours\n\nsecret\n").unwrap();
    std::os::unix::fs::symlink(&secret, md.join("new/1700000000.M1P1.host")).unwrap();
    std::os::unix::fs::symlink(&secret, md.join("cur/1700000001.M1P1.host:2,S")).unwrap();
    std::fs::write(
        md.join("new/1700000002.M1P1.host"),
        "Subject: real\n\nmail\n",
    )
    .unwrap();

    let drop = store.open(&mb).await.unwrap();
    assert_eq!(drop.messages().len(), 1, "only the regular file is listed");
    assert_eq!(
        drop.messages()[0].size,
        "Subject: real\r\n\r\nmail\r\n".len() as u64
    );
    assert!(secret.exists());
}
