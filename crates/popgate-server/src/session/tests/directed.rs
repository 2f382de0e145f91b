//! A directory that sends a login to another mailbox of its tenant.
//!
//! On the real clock: the directory checks passwords on the hashing pool's
//! own threads, which tokio's paused clock does not see (it would jump past
//! the login's waits while a check runs).

use super::*;

#[tokio::test]
async fn a_directory_can_send_a_login_to_another_mailbox_of_its_tenant_only() {
    use popgate_auth::{MemoryDirectory, MemoryUser};
    let limits = MemoryLimits::new(LimitsConfig::default());
    let dir = MemoryDirectory::new();
    dir.insert(
        "sales@acme.example",
        MemoryUser::new("{PLAIN}pw").opening("bob"),
    );
    dir.insert(
        "evil@acme.example",
        MemoryUser::new("{PLAIN}pw").opening("bob@globex.example"),
    );
    dir.insert(
        "dots@acme.example",
        MemoryUser::new("{PLAIN}pw").opening("../bob"),
    );
    let dir = Arc::new(dir);
    let store = Arc::new(Opened::default());
    let locks = Arc::new(popgate_lock::MemoryLocks::new());
    let mut c = Client::start_dir(&limits, dir.clone(), store.clone(), locks.clone());
    c.line().await.unwrap();
    assert!(c.cmd("USER sales@acme.example").await.starts_with("+OK"));
    assert!(c.cmd("PASS pw").await.starts_with("+OK"));
    assert_eq!(
        *store.0.lock().unwrap(),
        [MailboxId::new("acme", "bob", "acme.example")],
        "the alias opened the mailbox the directory named"
    );
    // The lock is the opened mailbox's: a second session of the alias finds
    // it in use.
    let mut other = Client::start_dir(&limits, dir.clone(), store.clone(), locks.clone());
    other.line().await.unwrap();
    other.cmd("USER sales@acme.example").await;
    let r = other.cmd("PASS pw").await;
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    for hostile in ["evil", "dots"] {
        let mut h = Client::start_dir(&limits, dir.clone(), store.clone(), locks.clone());
        h.line().await.unwrap();
        h.cmd(&format!("USER {hostile}@acme.example")).await;
        let r = h.cmd("PASS pw").await;
        assert!(r.starts_with("-ERR [SYS/PERM]"), "{hostile}: {r}");
    }
    assert_eq!(
        store.0.lock().unwrap().len(),
        1,
        "no other mailbox was opened"
    );
}
