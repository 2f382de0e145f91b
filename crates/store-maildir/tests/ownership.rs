//! Files and directories popgate creates in a Maildir take the Maildir
//! directory's owner, group and mode (files without the execute bits), as
//! Dovecot's do, so that Dovecot and the MTA, running as the mail user,
//! keep working on a Maildir that popgate (as root) has opened.
//!
//! Needs root to give files away; elsewhere the owner checks are skipped.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use popgate_store::{MailStore, MailboxId};
use store_maildir::{MaildirConfig, MaildirStore};

/// nobody:nogroup on Debian: a mail user that is not us.
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;

fn store(dir: &Path) -> MaildirStore {
    MaildirStore::new(MaildirConfig {
        path_template: format!("{}/%d/%n/Maildir", dir.display()),
        ..MaildirConfig::default()
    })
    .unwrap()
}

fn mailbox() -> MailboxId {
    MailboxId::new("t", "bob", "a.example")
}

/// Whether this process may give files away (root).
fn can_chown(dir: &Path) -> bool {
    let probe = dir.join("probe");
    fs::write(&probe, "").unwrap();
    let ok = std::os::unix::fs::chown(&probe, Some(MAIL_UID), Some(MAIL_GID)).is_ok();
    fs::remove_file(&probe).unwrap();
    if !ok {
        eprintln!("not root: owner checks skipped");
    }
    ok
}

fn chown_tree(path: &Path) {
    std::os::unix::fs::lchown(path, Some(MAIL_UID), Some(MAIL_GID)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

#[track_caller]
fn assert_owned(path: &Path, mode: u32, root: bool) {
    let meta = fs::symlink_metadata(path).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        mode,
        "{}: mode {:o}",
        path.display(),
        meta.mode() & 0o7777
    );
    if root {
        assert_eq!(
            (meta.uid(), meta.gid()),
            (MAIL_UID, MAIL_GID),
            "{} belongs to the mail user",
            path.display()
        );
    }
}

fn only_file(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{}: {files:?}", dir.display());
    files.pop().unwrap()
}

#[tokio::test]
async fn files_popgate_creates_take_the_maildir_owner_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = can_chown(dir.path());
    let md = dir.path().join("a.example/bob/Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    fs::write(
        md.join("new/1700000001.M1P1.host"),
        "Subject: a\n\nby the MTA\n",
    )
    .unwrap();
    for d in [&md, &md.join("cur"), &md.join("new"), &md.join("tmp")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o770)).unwrap();
    }
    if root {
        chown_tree(&md);
    }
    let store = store(dir.path());

    // open writes dovecot-uidlist (under its lock).
    let mut drop = store.open(&mailbox()).await.unwrap();
    assert_owned(&md.join("dovecot-uidlist"), 0o660, root);

    // A delivery: the tmp/ file, then its link in new/.
    store
        .append(&mailbox(), Box::pin(&b"Subject: b\n\ndelivered\n"[..]))
        .await
        .unwrap();
    assert_owned(&only_file(&md.join("new")), 0o660, root);
    assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    assert_owned(&md.join("dovecot-uidlist"), 0o660, root);

    // An expunge writes popgate-fence and rewrites the uidlist.
    drop.expunge(&[0], 9).await.unwrap();
    assert_owned(&md.join("popgate-fence"), 0o660, root);
    assert_owned(&md.join("dovecot-uidlist"), 0o660, root);
    assert!(!md.join("dovecot-uidlist.lock").exists());
}

#[tokio::test]
async fn directories_popgate_creates_take_the_maildir_owner_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = can_chown(dir.path());
    // A Maildir made by the provider's tools: the directory only.
    let md = dir.path().join("a.example/bob/Maildir");
    fs::create_dir_all(&md).unwrap();
    fs::set_permissions(&md, fs::Permissions::from_mode(0o750)).unwrap();
    if root {
        chown_tree(&md);
    }
    let store = store(dir.path());
    store
        .append(&mailbox(), Box::pin(&b"Subject: b\n\ndelivered\n"[..]))
        .await
        .unwrap();
    for sub in ["cur", "new", "tmp"] {
        assert_owned(&md.join(sub), 0o750, root);
    }
    assert_owned(&only_file(&md.join("new")), 0o640, root);
    assert_owned(&md.join("dovecot-uidlist"), 0o640, root);
}
