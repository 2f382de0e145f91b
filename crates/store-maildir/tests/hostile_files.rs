//! What a hosting customer who owns his Maildir's files can put there:
//! links to another tenant's directories, links to /dev/zero, FIFOs, huge
//! or garbage metadata, planted temporary files. None of it reaches
//! outside his Maildir, blocks a thread, grows memory, or panics.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use popgate_store::{MailStore, MailboxId, StoreError};
use store_maildir::{MaildirConfig, MaildirStore};
use tokio::io::AsyncReadExt;

/// Longer than any refusal takes, far shorter than a hang.
const PATIENCE: Duration = Duration::from_secs(10);

struct Fixture {
    dir: tempfile::TempDir,
    store: MaildirStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = MaildirStore::new(MaildirConfig {
            path_template: format!("{}/mail/%d/%n/Maildir", dir.path().display()),
            ..MaildirConfig::default()
        })
        .unwrap()
        .with_lock_timeout(Duration::from_secs(2));
        Fixture { dir, store }
    }

    fn mailbox(local: &str) -> MailboxId {
        MailboxId::new("t", local, "a.example")
    }

    /// `local`'s Maildir, with cur/ new/ tmp/.
    fn maildir(&self, local: &str) -> PathBuf {
        let md = self
            .dir
            .path()
            .join(format!("mail/a.example/{local}/Maildir"));
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(md.join(sub)).unwrap();
        }
        md
    }

    fn outside(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn open(&self, local: &str) -> Result<Box<dyn popgate_store::Maildrop>, StoreError> {
        let started = Instant::now();
        let r = tokio::time::timeout(PATIENCE, self.store.open(&Self::mailbox(local)))
            .await
            .expect("open must not hang");
        assert!(started.elapsed() < PATIENCE);
        r
    }

    async fn append(&self, local: &str, body: &'static [u8]) -> Result<String, StoreError> {
        self.store
            .append(&Self::mailbox(local), Box::pin(body))
            .await
    }
}

/// Every file under a directory, with its contents.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn drop_new(md: &Path, name: &str, body: &str) {
    fs::write(md.join("tmp").join(name), body).unwrap();
    fs::rename(md.join("tmp").join(name), md.join("new").join(name)).unwrap();
}

fn mkfifo(path: &Path) {
    let dir = fs::File::open(path.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        &dir,
        path.file_name().unwrap(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .unwrap();
}

/// Gives a reader blocked on a FIFO its end of file, again and again for a
/// minute, so that a test of a blocking bug fails instead of hanging.
fn unblock_fifo(path: &Path) {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let _ = fs::OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                .open(&path);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

/// A temporary error that says the file was refused (not read, not
/// waited for: a refusal at once, whatever else failed meanwhile).
fn assert_temporary<T>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Temporary(msg)) => {
            assert!(msg.contains("refused"), "{what}: {msg}");
            eprintln!("{what}: {msg}");
        }
        Err(e) => panic!("{what}: expected a temporary error, got {e}"),
        Ok(_) => panic!("{what}: expected a temporary error, got success"),
    }
}

fn assert_refused<T>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(e @ (StoreError::Temporary(_) | StoreError::Permanent(_))) => eprintln!("{what}: {e}"),
        Err(e) => panic!("{what}: expected a clear refusal, got {e}"),
        Ok(_) => panic!("{what}: expected a refusal, got success"),
    }
}

/// Bob, the victim, with two messages in cur/ and one in new/.
async fn victim(f: &Fixture) -> (PathBuf, Vec<(PathBuf, Vec<u8>)>) {
    let bob = f.maildir("bob");
    drop_new(&bob, "1700000001.M1P1.host", "Subject: bob 1\n\nsecret\n");
    drop_new(&bob, "1700000002.M1P1.host", "Subject: bob 2\n\nsecret\n");
    assert_eq!(f.open("bob").await.unwrap().messages().len(), 2);
    drop_new(&bob, "1700000003.M1P1.host", "Subject: bob 3\n\nnew\n");
    let before = tree(&bob);
    (bob, before)
}

#[tokio::test]
async fn linked_maildir_directories_are_refused_and_the_target_left_alone() {
    let f = Fixture::new();
    let (bob, before) = victim(&f).await;

    // Eve links her cur/ (then her new/, her Maildir, her home) to Bob's.
    for (eve, link, target) in [
        ("eve1", "Maildir/cur", bob.join("cur")),
        ("eve2", "Maildir/new", bob.join("new")),
        ("eve3", "Maildir", bob.clone()),
        ("eve4", "", bob.parent().unwrap().to_owned()),
    ] {
        let home = f.dir.path().join(format!("mail/a.example/{eve}"));
        let at = if link.is_empty() {
            home.clone()
        } else {
            home.join(link)
        };
        fs::create_dir_all(home.parent().unwrap()).unwrap();
        if link.contains('/') {
            f.maildir(eve);
            fs::remove_dir(&at).unwrap();
        } else if !link.is_empty() {
            fs::create_dir(&home).unwrap();
        }
        symlink(&target, &at).unwrap();

        let opened = f.open(eve).await;
        match &opened {
            Err(StoreError::Permanent(msg)) => assert!(msg.contains("symlink"), "{eve}: {msg}"),
            Err(e) => panic!("{eve}: expected [SYS/PERM], got {e}"),
            Ok(d) => panic!("{eve}: served {} messages", d.messages().len()),
        }
        assert_refused(f.append(eve, b"Subject: x\n\nx\n").await, eve);
        assert_eq!(tree(&bob), before, "{eve}: Bob's Maildir is untouched");
    }

    // A linked tmp/ is not used for delivery (reading needs no tmp/).
    let eve = f.maildir("eve5");
    fs::remove_dir(eve.join("tmp")).unwrap();
    symlink(bob.join("tmp"), eve.join("tmp")).unwrap();
    assert_refused(f.append("eve5", b"Subject: x\n\nx\n").await, "eve5");
    assert_eq!(f.open("eve5").await.unwrap().messages().len(), 0);
    assert_eq!(tree(&bob), before, "eve5: Bob's Maildir is untouched");
}

#[tokio::test]
async fn a_cur_swapped_for_a_link_during_a_session_is_not_followed() {
    let f = Fixture::new();
    let bob = f.maildir("bob");
    let eve = f.maildir("eve");
    // The same file name in both (a copied Maildir, a guessed name).
    let name = "1700000001.M1P1.host";
    drop_new(&bob, name, "Subject: bob\n\nsecret\n");
    drop_new(&eve, name, "Subject: eve\n\nmine\n");
    f.open("bob").await.unwrap();
    let mut drop = f.open("eve").await.unwrap();
    assert_eq!(drop.messages().len(), 1);
    let before = tree(&bob);

    fs::rename(eve.join("cur"), eve.join("old-cur")).unwrap();
    symlink(bob.join("cur"), eve.join("cur")).unwrap();
    match drop.fetch(0).await {
        Ok(mut s) => {
            let mut body = String::new();
            s.read_to_string(&mut body).await.unwrap();
            panic!("fetched through the link: {body:?}");
        }
        Err(e) => eprintln!("fetch: {e}"),
    }
    assert_refused(drop.expunge(&[0], 1).await, "expunge");
    assert_eq!(tree(&bob), before, "Bob's mail is neither read nor deleted");
}

#[tokio::test]
async fn following_symlinks_below_the_prefix_is_opt_in() {
    let f = Fixture::new();
    let elsewhere = f.outside("other-disk/carol");
    fs::create_dir_all(elsewhere.join("Maildir/new")).unwrap();
    drop_new_plain(&elsewhere.join("Maildir"));
    fs::create_dir_all(f.dir.path().join("mail/a.example")).unwrap();
    symlink(&elsewhere, f.dir.path().join("mail/a.example/carol")).unwrap();
    assert_refused(f.open("carol").await, "not followed by default");

    let follow = f.store.clone().with_follow_symlinks(true);
    let drop = follow.open(&Fixture::mailbox("carol")).await.unwrap();
    assert_eq!(drop.messages().len(), 1, "followed when the tenant opts in");
}

fn drop_new_plain(md: &Path) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    drop_new(md, "1700000009.M1P1.host", "Subject: c\n\nc\n");
}

#[tokio::test]
async fn a_link_in_the_fixed_prefix_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let md = real.join("a.example/bob/Maildir");
    fs::create_dir_all(md.join("new")).unwrap();
    drop_new_plain(&md);
    symlink(&real, dir.path().join("mail")).unwrap();
    let store = MaildirStore::new(MaildirConfig {
        path_template: format!("{}/mail/%d/%n/Maildir", dir.path().display()),
        ..MaildirConfig::default()
    })
    .unwrap();
    let drop = store.open(&Fixture::mailbox("bob")).await.unwrap();
    assert_eq!(drop.messages().len(), 1);
}

#[tokio::test]
async fn a_uidlist_linked_to_dev_zero_is_refused_at_once() {
    let f = Fixture::new();
    let md = f.maildir("bob");
    drop_new(&md, "1700000001.M1P1.host", "Subject: a\n\na\n");
    symlink("/dev/zero", md.join("dovecot-uidlist")).unwrap();
    assert_temporary(f.open("bob").await, "uidlist -> /dev/zero");
    assert_temporary(f.append("bob", b"Subject: b\n\nb\n").await, "append");
}

#[tokio::test]
async fn a_uidlist_that_is_a_fifo_does_not_block() {
    let f = Fixture::new();
    let md = f.maildir("bob");
    drop_new(&md, "1700000001.M1P1.host", "Subject: a\n\na\n");
    mkfifo(&md.join("dovecot-uidlist"));
    let r = tokio::time::timeout(PATIENCE, f.store.open(&Fixture::mailbox("bob"))).await;
    // (Before the fix, the blocking pool's thread waited for a writer.)
    let Ok(r) = r else {
        unblock_fifo(&md.join("dovecot-uidlist"));
        panic!("open blocked on a FIFO");
    };
    assert_temporary(r, "uidlist FIFO");
    fs::remove_file(md.join("dovecot-uidlist")).unwrap();
    fs::create_dir(md.join("dovecot-uidlist")).unwrap();
    assert_temporary(f.open("bob").await, "uidlist directory");
}

#[tokio::test]
async fn a_huge_uidlist_is_not_read() {
    let f = Fixture::new();
    let md = f.maildir("bob");
    drop_new(&md, "1700000001.M1P1.host", "Subject: a\n\na\n");
    // Sparse: 1 GiB that takes no disk, after a valid header.
    let mut file = fs::File::create(md.join("dovecot-uidlist")).unwrap();
    std::io::Write::write_all(&mut file, b"3 V1 N2\n1 :1700000001.M1P1.host\n").unwrap();
    file.set_len(1 << 30).unwrap();
    assert_temporary(f.open("bob").await, "1 GiB uidlist");
}

#[tokio::test]
async fn a_hostile_fence_file_refuses_the_expunge_and_deletes_nothing() {
    let f = Fixture::new();
    let md = f.maildir("bob");
    drop_new(&md, "1700000001.M1P1.host", "Subject: a\n\na\n");
    let fence = md.join("popgate-fence");
    let plant: [(&str, &dyn Fn()); 4] = [
        ("/dev/zero link", &|| symlink("/dev/zero", &fence).unwrap()),
        ("FIFO", &|| mkfifo(&fence)),
        ("huge", &|| {
            fs::File::create(&fence).unwrap().set_len(1 << 30).unwrap()
        }),
        ("directory", &|| fs::create_dir(&fence).unwrap()),
    ];
    for (what, plant) in plant {
        let mut drop = f.open("bob").await.unwrap();
        assert_eq!(drop.messages().len(), 1);
        plant();
        let r = tokio::time::timeout(PATIENCE, drop.expunge(&[0], 7)).await;
        let Ok(r) = r else {
            unblock_fifo(&fence);
            panic!("{what}: expunge blocked");
        };
        assert_temporary(r, what);
        assert_eq!(fs::read_dir(md.join("cur")).unwrap().count(), 1, "{what}");
        let _ = fs::remove_file(&fence).or_else(|_| fs::remove_dir(&fence));
    }
    // Garbage in a regular fence file is no fence (and no failure).
    fs::write(&fence, b"\xff\xfe garbage").unwrap();
    let mut drop = f.open("bob").await.unwrap();
    let report = drop.expunge(&[0], 7).await.unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(fs::read_to_string(&fence).unwrap(), "7\n");
}

#[tokio::test]
async fn planted_temp_files_are_never_followed_nor_kept() {
    let f = Fixture::new();
    let md = f.maildir("bob");
    let victim = f.outside("victim");
    fs::write(&victim, "precious\n").unwrap();
    drop_new(&md, "1700000001.M1P1.host", "Subject: a\n\na\n");
    symlink(&victim, md.join("dovecot-uidlist.tmp")).unwrap();
    symlink(&victim, md.join("popgate-fence.tmp")).unwrap();

    let mut drop = f.open("bob").await.unwrap();
    assert_eq!(drop.messages().len(), 1);
    f.append("bob", b"Subject: b\n\nb\n").await.unwrap();
    drop.expunge(&[0], 3).await.unwrap();

    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    for name in ["dovecot-uidlist", "popgate-fence"] {
        let meta = fs::symlink_metadata(md.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is a regular file");
        assert!(!md.join(format!("{name}.tmp")).exists());
    }
    let uidlist = fs::read_to_string(md.join("dovecot-uidlist")).unwrap();
    assert!(uidlist.starts_with("3 V"), "{uidlist}");
    assert_eq!(f.open("bob").await.unwrap().messages().len(), 1);

    // A stale leftover (a crash mid-write) is replaced, not appended to.
    fs::write(md.join("dovecot-uidlist.tmp"), "junk\n".repeat(100)).unwrap();
    drop_new(&md, "1700000005.M1P1.host", "Subject: c\n\nc\n");
    assert_eq!(f.open("bob").await.unwrap().messages().len(), 2);
    assert!(!md.join("dovecot-uidlist.tmp").exists());
    let uidlist = fs::read_to_string(md.join("dovecot-uidlist")).unwrap();
    assert!(!uidlist.contains("junk"), "{uidlist}");
}

#[tokio::test]
async fn a_message_swapped_for_a_fifo_does_not_block_a_fetch() {
    let f = Fixture::new();
    let md = f.maildir("bob");
    drop_new(&md, "1700000001.M1P1.host,S=5,W=6", "a\nbcd");
    let drop = f.open("bob").await.unwrap();
    let file = md.join("cur/1700000001.M1P1.host,S=5,W=6:2,");
    fs::remove_file(&file).unwrap();
    mkfifo(&file);
    let r = tokio::time::timeout(PATIENCE, drop.fetch(0)).await;
    let Ok(r) = r else {
        unblock_fifo(&file);
        panic!("fetch blocked on a FIFO");
    };
    assert_temporary(r, "message FIFO");
}

#[tokio::test]
async fn a_non_ascii_uidlist_header_is_served() {
    let f = Fixture::new();
    let md = f.maildir("bob");
    fs::write(
        md.join("dovecot-uidlist"),
        b"3 V5 N3 G0123456789abcdef0123456789abcdef \xe9t\xc3\xa9\n2 :1700000001.M1P1.host\n",
    )
    .unwrap();
    fs::write(md.join("cur/1700000001.M1P1.host:2,S"), "Subject: a\n\na\n").unwrap();
    let drop = f.open("bob").await.unwrap();
    assert_eq!(drop.messages().len(), 1);
    assert_eq!(drop.messages()[0].uidl, "0000000200000005");
}
