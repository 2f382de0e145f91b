//! A per-user Maildir from the directory (`MailStore::with_location`):
//! served when it lies below the template's fixed prefix, refused
//! otherwise; never through a symlink, even on a tenant that follows
//! them; and the lock key is the Maildir actually opened.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use popgate_store::{MailStore, MailboxId, StoreError};
use store_maildir::{MaildirConfig, MaildirStore};

fn store(root: &Path, follow: bool) -> MaildirStore {
    MaildirStore::new(MaildirConfig {
        path_template: format!("{}/mail/%d/%n/Maildir", root.display()),
        ..MaildirConfig::default()
    })
    .unwrap()
    .with_follow_symlinks(follow)
}

fn maildir_with_one(path: &Path, name: &str) -> PathBuf {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(path.join(sub)).unwrap();
    }
    fs::write(path.join("new").join(name), b"Subject: x\n\nbody\n").unwrap();
    path.to_owned()
}

fn bob() -> MailboxId {
    MailboxId::new("t", "bob", "a.example")
}

#[tokio::test]
async fn a_location_below_the_root_is_opened_and_keys_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = store(root, false);
    let vmail = maildir_with_one(&root.join("mail/hosted/bob"), "1.M1P1.h");
    let located = store
        .with_location(bob(), &format!("maildir:{}", vmail.display()))
        .unwrap();
    let drop = store.open(&located).await.unwrap();
    assert_eq!(drop.messages().len(), 1);
    assert!(
        !root.join("mail/a.example/bob").exists(),
        "the template's place is not used"
    );
    // Another spelling of the same Maildir, and the template path of a
    // login whose Maildir it is, share one lock key.
    let respelled = store
        .with_location(bob(), &format!("{}/mail//hosted/./bob/", root.display()))
        .unwrap();
    assert_eq!(store.mailbox_key(&respelled), store.mailbox_key(&located));
    let own = store
        .with_location(bob(), &format!("{}/mail/%d/%n/Maildir", root.display()))
        .unwrap();
    assert_eq!(store.mailbox_key(&own), store.mailbox_key(&bob()));
    assert_ne!(store.mailbox_key(&located), store.mailbox_key(&bob()));
}

#[tokio::test]
async fn a_location_outside_the_root_is_refused_and_nothing_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = store(root, true);
    let other = maildir_with_one(&root.join("other-tenant/a.example/bob/Maildir"), "1.M1P1.o");
    for bad in [
        other.display().to_string(),
        format!(
            "{}/mail/../other-tenant/a.example/bob/Maildir",
            root.display()
        ),
        "/etc".to_owned(),
        format!("{}/mail", root.display()),
        format!("{}/mail/a\0b", root.display()),
    ] {
        let e = store.with_location(bob(), &bad).unwrap_err();
        assert!(!e.is_empty(), "{bad:?}");
    }
    // A MailboxId built with a bad location by hand opens nothing either.
    let mut forged = bob();
    forged.location = Some(other.display().to_string());
    assert!(matches!(
        store.open(&forged).await,
        Err(StoreError::Permanent(_))
    ));
    assert!(!other.join("dovecot-uidlist").exists());
    assert!(other.join("new/1.M1P1.o").exists());
}

#[tokio::test]
async fn a_symlink_below_the_root_is_not_followed_even_when_the_tenant_follows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let other = maildir_with_one(&root.join("other-tenant/bob/Maildir"), "1.M1P1.o");
    fs::create_dir_all(root.join("mail/a.example")).unwrap();
    symlink(
        root.join("other-tenant"),
        root.join("mail/a.example/escape"),
    )
    .unwrap();
    let location = format!("{}/mail/a.example/escape/bob/Maildir", root.display());
    for follow in [false, true] {
        let store = store(root, follow);
        let located = store.with_location(bob(), &location).unwrap();
        let e = match store.open(&located).await {
            Ok(_) => panic!("opened through a symlink (follow = {follow})"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("symlink"), "{e}");
    }
    assert!(!other.join("dovecot-uidlist").exists());
    // The tenant's own template paths still follow symlinks when asked to.
    symlink(
        root.join("other-tenant/bob"),
        root.join("mail/a.example/linked"),
    )
    .unwrap();
    let linked = MailboxId::new("t", "linked", "a.example");
    assert_eq!(
        store(root, true)
            .open(&linked)
            .await
            .unwrap()
            .messages()
            .len(),
        1
    );
}
