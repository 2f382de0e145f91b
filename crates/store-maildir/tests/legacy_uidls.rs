//! UIDLs of other servers on a Maildir: Courier's `courierpop3dsizelist`
//! (with `courier_uidls`), Cyrus's `%v.%u` as `uidl_format`, and a carried
//! UIDL written by `import` that survives a second store on the Maildir.

use std::fs;
use std::path::PathBuf;

use popgate_store::{MailStore, MailboxId};
use store_maildir::{MaildirConfig, MaildirStore};

struct Root(PathBuf);

impl Root {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("legacy-uidls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Root(p)
    }
    fn store(&self, uidl_format: &str) -> MaildirStore {
        MaildirStore::new(MaildirConfig {
            path_template: format!("{}/%d/%n/Maildir", self.0.display()),
            uidl_format: uidl_format.into(),
        })
        .unwrap()
    }
    fn maildir(&self) -> PathBuf {
        self.0.join("example.org/bob/Maildir")
    }
    fn put(&self, dir: &str, name: &str, body: &[u8]) {
        let d = self.maildir().join(dir);
        fs::create_dir_all(&d).unwrap();
        fs::create_dir_all(self.maildir().join("tmp")).unwrap();
        fs::write(d.join(name), body).unwrap();
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mailbox() -> MailboxId {
    MailboxId::new("t", "bob", "example.org")
}

async fn uidls(store: &MaildirStore) -> Vec<String> {
    let drop = store.open(&mailbox()).await.unwrap();
    drop.messages().iter().map(|m| m.uidl.clone()).collect()
}

#[tokio::test]
async fn courier_uidls_and_order_are_served_from_courierpop3dsizelist() {
    let root = Root::new("courier");
    root.put("cur", "1100000001.M1P1.old:2,S", b"Subject: a\n\na\n");
    root.put("cur", "1100000002.M1P1.old:2,S", b"Subject: b\n\nb\n");
    root.put("cur", "1100000003.M1P1.old:2,", b"Subject: c\n\nc\n");
    root.put("new", "1100000004.M1P1.old", b"Subject: new since\n\nd\n");
    // Courier's POP3 order differs from the names' order; message 3 has a v0 entry.
    fs::write(
        root.maildir().join("courierpop3dsizelist"),
        "/2 9 1099999999\n\
         1100000002.M1P1.old:2,S 16 7:1099999999\n\
         1100000001.M1P1.old:2,S 16 6:1099999999\n\
         1100000003.M1P1.old 16\n",
    )
    .unwrap();
    let courier = root.store("%08Xu%08Xv").with_courier_uidls(true);
    let got = uidls(&courier).await;
    assert_eq!(
        got[..3],
        ["UID7-1099999999", "UID6-1099999999", "1100000003.M1P1.old"]
    );
    assert_eq!(got.len(), 4, "mail the list does not name follows: {got:?}");
    assert!(!got[3].starts_with("UID"), "{got:?}");
    assert_eq!(uidls(&courier).await, got, "stable");
    // Without the setting, the Maildir's own UIDLs.
    assert!(
        uidls(&root.store("%08Xu%08Xv"))
            .await
            .iter()
            .all(|u| !u.starts_with("UID"))
    );
}

#[tokio::test]
async fn cyrus_style_uidls_come_from_the_uidl_format() {
    let root = Root::new("cyrus");
    root.put("cur", "1200000001.M1P1.h:2,S", b"Subject: x\n\nx\n");
    // cyrus2dovecot keeps Cyrus's UIDVALIDITY and UIDs in the uidlist.
    fs::write(
        root.maildir().join("dovecot-uidlist"),
        "3 V1427364213 N18 G0123456789abcdef0123456789abcdef\n17 :1200000001.M1P1.h\n",
    )
    .unwrap();
    assert_eq!(uidls(&root.store("%v.%u")).await, ["1427364213.17"]);
}

#[tokio::test]
async fn an_import_keeps_its_uidl_for_dovecot_and_refuses_a_repeat() {
    let root = Root::new("import");
    let store = root.store("%08Xu%08Xv");
    let stream =
        |b: &'static [u8]| -> popgate_store::MessageStream { Box::pin(std::io::Cursor::new(b)) };
    store
        .import(&mailbox(), "UID7-1099999999", stream(b"Subject: i\n\ni\n"))
        .await
        .unwrap();
    let list = fs::read_to_string(root.maildir().join("dovecot-uidlist")).unwrap();
    assert!(
        list.contains(" PUID7-1099999999 "),
        "Dovecot's P field: {list}"
    );
    assert!(
        store
            .import(&mailbox(), "UID7-1099999999", stream(b"again"))
            .await
            .is_err()
    );
    assert_eq!(uidls(&store).await, ["UID7-1099999999"]);
    // A record whose file never arrived (a crash between the two) does not block a re-import.
    let cur = root.maildir().join("cur");
    for f in fs::read_dir(&cur).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    store
        .import(&mailbox(), "UID7-1099999999", stream(b"Subject: i\n\ni\n"))
        .await
        .unwrap();
    assert_eq!(uidls(&store).await, ["UID7-1099999999"]);
}
