//! Maildirs laid out exactly as Dovecot 2.3.19 left them (or as it was
//! given them), and what Dovecot's POP3 server listed for each: popgate
//! must list the same UIDLs and sizes, and write the same uidlist.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use popgate_store::{MailStore, MailboxId, Maildrop, StoreError};
use store_maildir::{MaildirConfig, MaildirStore};
use tokio::io::AsyncReadExt;

struct Fixture {
    dir: PathBuf,
    store: MaildirStore,
}

impl Fixture {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("store-maildir-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let store = MaildirStore::new(MaildirConfig {
            path_template: format!("{}/%n/Maildir", dir.display()),
            ..MaildirConfig::default()
        })
        .unwrap();
        Fixture { dir, store }
    }

    fn mailbox(&self) -> MailboxId {
        MailboxId::new("t", "user", "")
    }

    /// The Maildir, with cur/ new/ tmp/ created.
    fn maildir(&self) -> PathBuf {
        let md = self.dir.join("user/Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(md.join(sub)).unwrap();
        }
        md
    }

    async fn listing(&self) -> Vec<(String, u64)> {
        let drop = self.store.open(&self.mailbox()).await.unwrap();
        drop.messages()
            .iter()
            .map(|m| (m.uidl.clone(), m.size))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn owned(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(u, s)| (u.to_string(), *s)).collect()
}

#[tokio::test]
async fn reads_a_uidlist_written_by_dovecot() {
    let f = Fixture::new("dovecot-written");
    let md = f.maildir();
    // A message dropped into new/ by hand (LF only, no sizes in its name),
    // then moved and numbered by Dovecot's POP3; a second delivered by
    // dovecot-lda, which appended its record.
    fs::write(
        md.join("cur/1700000000.M1P1.host:2,"),
        "From: a@b\nSubject: hi\n\nbody\n",
    )
    .unwrap();
    fs::write(
        md.join("new/1795714686.M118395P12561.vm,S=36,W=41"),
        "From: x@y\nSubject: lda\n\nhello\nworld\n",
    )
    .unwrap();
    let uidlist = "3 V1795714592 N3 Gdfda3906206e086b6f2c000083ecc375\n\
                   1 W32 :1700000000.M1P1.host\n\
                   2 :1795714686.M118395P12561.vm,S=36,W=41\n";
    fs::write(md.join("dovecot-uidlist"), uidlist).unwrap();
    let ino = fs::metadata(md.join("dovecot-uidlist")).unwrap().ino();

    // Dovecot listed: 1 000000016b086e20 32 / 2 000000026b086e20 41
    assert_eq!(
        f.listing().await,
        owned(&[("000000016b086e20", 32), ("000000026b086e20", 41)])
    );
    assert_eq!(
        fs::metadata(md.join("dovecot-uidlist")).unwrap().ino(),
        ino,
        "nothing changed, so the uidlist was not rewritten"
    );
    assert_eq!(
        names(&md.join("cur")),
        [
            "1700000000.M1P1.host:2,",
            "1795714686.M118395P12561.vm,S=36,W=41:2,"
        ]
    );
}

#[tokio::test]
async fn saved_uidls_order_and_sizes_are_honoured_like_dovecot() {
    let f = Fixture::new("saved-uidl");
    let md = f.maildir();
    for i in 1..=5 {
        fs::write(
            md.join(format!("cur/100000000{i}.M1P1.h:2,S")),
            format!("Subject: m{i}\n\nbody {i}\n"),
        )
        .unwrap();
    }
    fs::write(
        md.join("dovecot-uidlist"),
        "3 V1234 N10 G0123456789abcdef0123456789abcdef\n\
         1 :1000000001.M1P1.h\n\
         2 P :1000000002.M1P1.h\n\
         3 Pcustom-uidl-3 W999 :1000000003.M1P1.h\n\
         5 O2 :1000000004.M1P1.h\n\
         7 O1 :1000000005.M1P1.h\n",
    )
    .unwrap();
    // What Dovecot's POP3 listed for this Maildir.
    assert_eq!(
        f.listing().await,
        owned(&[
            ("00000007000004d2", 23),
            ("00000005000004d2", 23),
            ("00000001000004d2", 23),
            ("1000000002.M1P1.h", 23),
            ("custom-uidl-3", 999),
        ])
    );
    // And the uidlist Dovecot wrote back, byte for byte: computed sizes
    // cached as W, everything else kept.
    assert_eq!(
        fs::read_to_string(md.join("dovecot-uidlist")).unwrap(),
        "3 V1234 N10 G0123456789abcdef0123456789abcdef\n\
         1 W23 :1000000001.M1P1.h\n\
         2 P W23 :1000000002.M1P1.h\n\
         3 Pcustom-uidl-3 W999 :1000000003.M1P1.h\n\
         5 O2 W23 :1000000004.M1P1.h\n\
         7 O1 W23 :1000000005.M1P1.h\n"
    );
}

#[tokio::test]
async fn new_messages_move_to_cur_and_get_uids_in_dovecots_order() {
    let f = Fixture::new("new-to-cur");
    let md = f.maildir();
    fs::write(md.join("new/1500000002.M5P1.h"), "Subject: a\n\nx\n").unwrap();
    fs::write(md.join("new/1500000002.M40P1.h"), "Subject: b\n\nx\n").unwrap();
    fs::write(md.join("new/1500000001.zzz:2,S"), "Subject: c\n\nx\n").unwrap();
    fs::write(md.join("new/abc"), "Subject: d\n\nx\n").unwrap();
    fs::write(
        md.join("cur/1500000003.M1P1.h,S=17"),
        "Subject: e\r\n\r\nx\r\n",
    )
    .unwrap();

    let drop = f.store.open_maildrop(&f.mailbox()).await.unwrap();
    let keys = drop.base_names();
    // The order Dovecot gave these five in one sync.
    assert_eq!(
        keys,
        [
            "abc",
            "1500000001.zzz",
            "1500000002.M5P1.h",
            "1500000002.M40P1.h",
            "1500000003.M1P1.h,S=17"
        ]
    );
    assert!(drop.messages().iter().all(|m| m.size == 17));
    assert!(names(&md.join("new")).is_empty());
    assert_eq!(
        names(&md.join("cur")),
        [
            "1500000001.zzz:2,S",
            "1500000002.M40P1.h:2,",
            "1500000002.M5P1.h:2,",
            "1500000003.M1P1.h,S=17",
            "abc:2,"
        ]
    );
    let uidlist = fs::read_to_string(md.join("dovecot-uidlist")).unwrap();
    let body: Vec<_> = uidlist.lines().skip(1).collect();
    assert_eq!(
        body,
        [
            "1 W17 :abc",
            "2 W17 :1500000001.zzz",
            "3 W17 :1500000002.M5P1.h",
            "4 W17 :1500000002.M40P1.h",
            "5 W17 :1500000003.M1P1.h,S=17"
        ]
    );
    assert!(
        uidlist.starts_with("3 V") && uidlist.contains(" N6 G"),
        "{uidlist}"
    );
}

#[tokio::test]
async fn sizes_come_from_names_without_reading() {
    let f = Fixture::new("sizes");
    let md = f.maildir();
    // ,W= is trusted as Dovecot trusts it (the content says otherwise).
    fs::write(md.join("cur/1.M1P1.h,S=5,W=999:2,"), "a\nb\n").unwrap();
    // ,S= alone is the physical size, not the POP3 size: the file is read.
    fs::write(md.join("cur/2.M1P1.h,S=4:2,"), "a\nb\n").unwrap();
    let sizes: Vec<_> = f.listing().await.into_iter().map(|(_, s)| s).collect();
    assert_eq!(sizes, [999, 6]);
    let uidlist = fs::read_to_string(md.join("dovecot-uidlist")).unwrap();
    assert!(uidlist.contains("\n1 :1.M1P1.h,S=5,W=999\n"), "{uidlist}");
    assert!(uidlist.contains("\n2 W6 :2.M1P1.h,S=4\n"), "{uidlist}");
}

#[tokio::test]
async fn a_renamed_message_is_still_fetched_and_expunged() {
    let f = Fixture::new("renamed");
    let md = f.maildir();
    fs::write(md.join("cur/1.M1P1.h,S=4,W=6:2,"), "a\nb\n").unwrap();
    fs::write(md.join("cur/2.M1P1.h,S=4,W=6:2,"), "c\nd\n").unwrap();
    let mut drop = f.store.open(&f.mailbox()).await.unwrap();
    // Another client marks both seen and replied.
    for i in 1..=2 {
        fs::rename(
            md.join(format!("cur/{i}.M1P1.h,S=4,W=6:2,")),
            md.join(format!("cur/{i}.M1P1.h,S=4,W=6:2,RS")),
        )
        .unwrap();
    }
    let mut body = Vec::new();
    drop.fetch(0)
        .await
        .unwrap()
        .read_to_end(&mut body)
        .await
        .unwrap();
    assert_eq!(body, b"a\nb\n");
    let report = drop.expunge(&[1], 1).await.unwrap();
    assert_eq!((report.deleted, report.already_gone), (1, 0));
    assert_eq!(names(&md.join("cur")), ["1.M1P1.h,S=4,W=6:2,RS"]);
    match drop.fetch(1).await {
        Err(StoreError::Gone) => {}
        other => panic!("want Gone, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn a_stale_fence_deletes_nothing() {
    let f = Fixture::new("fence");
    let md = f.maildir();
    fs::write(md.join("cur/1.M1P1.h,S=1,W=1:2,"), "a").unwrap();
    fs::write(md.join("cur/2.M1P1.h,S=1,W=1:2,"), "b").unwrap();
    let mut newer = f.store.open(&f.mailbox()).await.unwrap();
    let mut older = f.store.open(&f.mailbox()).await.unwrap();
    newer.expunge(&[0], 5).await.unwrap();
    assert_eq!(fs::read_to_string(md.join("popgate-fence")).unwrap(), "5\n");
    match older.expunge(&[1], 4).await {
        Err(StoreError::Fenced(4)) => {}
        other => panic!("want Fenced(4), got {other:?}"),
    }
    assert_eq!(names(&md.join("cur")), ["2.M1P1.h,S=1,W=1:2,"]);
    // The same fence again is the same lock holder: allowed.
    assert_eq!(newer.expunge(&[1], 5).await.unwrap().deleted, 1);
}

#[tokio::test]
async fn delivery_uses_dovecot_names_and_sizes() {
    let f = Fixture::new("append");
    let msg = b"Subject: x\n\nline\n".to_vec();
    let uidl = f
        .store
        .append(&f.mailbox(), Box::pin(std::io::Cursor::new(msg)))
        .await
        .unwrap();
    let md = f.dir.join("user/Maildir");
    let new = names(&md.join("new"));
    assert_eq!(new.len(), 1);
    let name = &new[0];
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let pattern = format!("P{}Q", std::process::id());
    assert!(name.contains(".M") && name.contains(&pattern), "{name}");
    assert!(
        name.ends_with(&format!(".{},S=17,W=20", host.trim())),
        "{name}"
    );
    assert!(names(&md.join("tmp")).is_empty(), "tmp/ is left clean");
    let uidlist = fs::read_to_string(md.join("dovecot-uidlist")).unwrap();
    assert!(uidlist.ends_with(&format!("\n1 :{name}\n")), "{uidlist}");
    let v: u32 = uidlist[3..].split(' ').next().unwrap().parse().unwrap();
    assert_eq!(uidl, format!("00000001{v:08x}"));
}

#[tokio::test]
async fn a_missing_maildir_is_empty_and_not_created() {
    let f = Fixture::new("missing");
    assert!(f.listing().await.is_empty());
    assert!(!f.dir.join("user").exists());
}

#[tokio::test]
async fn a_held_uidlist_lock_delays_only_new_messages() {
    let f = Fixture::new("locked");
    let md = f.maildir();
    fs::write(md.join("cur/1.M1P1.h,S=1,W=1:2,"), "a").unwrap();
    assert_eq!(f.listing().await.len(), 1);
    fs::write(md.join("new/2.M1P1.h,S=1,W=1"), "b").unwrap();
    // Another host's Dovecot holds the uidlist lock.
    fs::write(md.join("dovecot-uidlist.lock"), "4242:elsewhere").unwrap();
    let store = f
        .store
        .clone()
        .with_lock_timeout(Duration::from_millis(200));
    let drop = store.open(&f.mailbox()).await.unwrap();
    assert_eq!(drop.messages().len(), 1, "the numbered message is served");
    match store
        .append(&f.mailbox(), Box::pin(std::io::Cursor::new(b"x".to_vec())))
        .await
    {
        Err(e) => assert!(e.is_temporary(), "{e}"),
        Ok(_) => panic!("append must wait for the lock"),
    }
    assert_eq!(names(&md.join("new")), Vec::<String>::new());
    fs::remove_file(md.join("dovecot-uidlist.lock")).unwrap();
    assert_eq!(f.listing().await.len(), 2, "the next session numbers it");
}

#[tokio::test]
async fn corrupt_uidlist_lines_are_skipped() {
    let f = Fixture::new("corrupt");
    let md = f.maildir();
    fs::write(md.join("cur/1.M1P1.h,S=1,W=1:2,"), "a").unwrap();
    fs::write(md.join("cur/2.M1P1.h,S=1,W=1:2,"), "b").unwrap();
    fs::write(
        md.join("dovecot-uidlist"),
        "3 V10 N5 G0123456789abcdef0123456789abcdef\n\
         garbage line\n\
         3 :2.M1P1.h,S=1,W=1\n",
    )
    .unwrap();
    // 2 keeps UID 3; 1 gets the next UID, 5.
    assert_eq!(
        f.listing().await,
        owned(&[("000000030000000a", 1), ("000000050000000a", 1)])
    );
}
