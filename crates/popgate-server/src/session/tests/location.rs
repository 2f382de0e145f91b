//! A per-user mailbox location from the directory: the store checks it,
//! a refused one opens nothing, and the lock follows the location.
//!
//! On the real clock: the directory checks passwords on the hashing pool's
//! own threads, which tokio's paused clock does not see (it would jump past
//! the login's waits while a check runs).

use std::sync::Arc;

use crate::limits::{LimitsConfig, MemoryLimits};
use popgate_auth::{MemoryDirectory, MemoryUser};
use popgate_store::{MailStore, MailboxId, Maildrop, MessageStream, StoreError};

use super::{Client, Empty, Opened};

/// Takes locations below `/ok/` and keys its lock by them.
#[derive(Default)]
struct Located(Opened);

#[async_trait::async_trait]
impl MailStore for Located {
    fn backend(&self) -> &'static str {
        "located"
    }
    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        self.0.0.lock().unwrap().push(mailbox.clone());
        Ok(Box::new(Empty))
    }
    async fn append(&self, _: &MailboxId, _: MessageStream) -> Result<String, StoreError> {
        Err(StoreError::Permanent("read-only".into()))
    }
    fn mailbox_key(&self, mailbox: &MailboxId) -> String {
        match &mailbox.location {
            Some(l) => l.clone(),
            None => mailbox.login(),
        }
    }
    fn with_location(&self, mut mailbox: MailboxId, location: &str) -> Result<MailboxId, String> {
        if !location.starts_with("/ok/") {
            return Err("not below /ok".into());
        }
        mailbox.location = Some(location.to_owned());
        Ok(mailbox)
    }
}

fn directory() -> Arc<MemoryDirectory> {
    let dir = MemoryDirectory::new();
    dir.insert(
        "bob@acme.example",
        MemoryUser::new("{PLAIN}pw").located("/ok/shared"),
    );
    dir.insert(
        "ann@acme.example",
        MemoryUser::new("{PLAIN}pw").located("/ok/shared"),
    );
    dir.insert(
        "eve@acme.example",
        MemoryUser::new("{PLAIN}pw").located("/etc"),
    );
    Arc::new(dir)
}

async fn pass(client: &mut Client, user: &str) -> String {
    client.line().await.unwrap();
    client.cmd(&format!("USER {user}")).await;
    client.cmd("PASS pw").await
}

#[tokio::test]
async fn the_store_confines_the_location_and_the_lock_follows_it() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let store = Arc::new(Located::default());
    let locks = Arc::new(popgate_lock::MemoryLocks::new());
    let dir = directory();
    let mut bob = Client::start_dir(&limits, dir.clone(), store.clone(), locks.clone());
    assert!(pass(&mut bob, "bob@acme.example").await.starts_with("+OK"));
    let mut expected = MailboxId::new("acme", "bob", "acme.example");
    expected.location = Some("/ok/shared".into());
    assert_eq!(*store.0.0.lock().unwrap(), [expected]);
    // ann's location is the same place: one lock.
    let mut ann = Client::start_dir(&limits, dir.clone(), store.clone(), locks.clone());
    let r = pass(&mut ann, "ann@acme.example").await;
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    // eve's is refused: [SYS/TEMP], nothing opened.
    let mut eve = Client::start_dir(&limits, dir, store.clone(), locks);
    let r = pass(&mut eve, "eve@acme.example").await;
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert_eq!(
        store.0.0.lock().unwrap().len(),
        1,
        "nothing else was opened"
    );
}

#[tokio::test]
async fn a_store_without_paths_ignores_the_location() {
    let limits = MemoryLimits::new(LimitsConfig::default());
    let store = Arc::new(Opened::default());
    let locks = Arc::new(popgate_lock::MemoryLocks::new());
    let mut eve = Client::start_dir(&limits, directory(), store.clone(), locks);
    assert!(pass(&mut eve, "eve@acme.example").await.starts_with("+OK"));
    assert_eq!(
        *store.0.lock().unwrap(),
        [MailboxId::new("acme", "eve", "acme.example")],
        "the login's own mailbox, without a location"
    );
}
