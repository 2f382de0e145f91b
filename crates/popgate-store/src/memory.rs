//! [`MemoryStore`]: a whole `MailStore` in a map, for tests and as the
//! reference for anyone writing a backend. It passes the conformance kit
//! with every capability, and each rule of the seam is visible in a few
//! lines: the snapshot, UIDs never reused, the POP3 size computed once at
//! delivery, fenced and atomic expunge, `Gone` for a message deleted
//! behind a session's back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::{
    CountingReader, ExpungeReport, MailStore, MailboxId, Maildrop, MessageInfo, MessageStream,
    StoreError, check_carried_uidl, expunge_targets, message_at,
};

/// Chunk size for reading deliveries.
const CHUNK: usize = 64 * 1024;

/// An in-process mail store. Clones share the mailboxes.
#[derive(Clone, Default)]
pub struct MemoryStore {
    mailboxes: Arc<Mutex<HashMap<String, Mailbox>>>,
}

#[derive(Default)]
struct Mailbox {
    /// UIDs grow and are never given twice: a UIDL is never reused.
    next_uid: u32,
    /// The newest fencing token an expunge committed with.
    fence: u64,
    /// In UID order.
    messages: Vec<Stored>,
}

#[derive(Clone)]
struct Stored {
    uid: u32,
    size: u64,
    body: Arc<[u8]>,
    /// A UIDL carried in by `import`; else the UID's.
    carried: Option<Arc<str>>,
}

impl Stored {
    fn uidl(&self) -> String {
        match &self.carried {
            Some(u) => u.to_string(),
            None => uidl(self.uid),
        }
    }
}

fn uidl(uid: u32) -> String {
    format!("{uid:08X}")
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Mailbox>> {
        self.mailboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many messages a mailbox holds now (for tests).
    pub fn count(&self, mailbox: &MailboxId) -> usize {
        self.lock()
            .get(&self.mailbox_key(mailbox))
            .map_or(0, |m| m.messages.len())
    }
}

#[async_trait]
impl MailStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        let key = self.mailbox_key(mailbox);
        // A mailbox that does not exist yet is empty, and opening it creates nothing.
        let snapshot = self
            .lock()
            .get(&key)
            .map(|m| m.messages.clone())
            .unwrap_or_default();
        let messages = snapshot
            .iter()
            .map(|m| MessageInfo {
                uidl: m.uidl(),
                size: m.size,
            })
            .collect();
        Ok(Box::new(MemoryDrop {
            store: self.clone(),
            key,
            snapshot,
            messages,
        }))
    }

    async fn append(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
    ) -> Result<String, StoreError> {
        self.store(mailbox, message, None).await
    }

    async fn import(
        &self,
        mailbox: &MailboxId,
        uidl: &str,
        message: MessageStream,
    ) -> Result<(), StoreError> {
        check_carried_uidl(uidl)?;
        self.store(mailbox, message, Some(uidl)).await.map(|_| ())
    }
}

impl MemoryStore {
    async fn store(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
        carried: Option<&str>,
    ) -> Result<String, StoreError> {
        // Read the whole message first: a delivery that fails half-way stores nothing.
        let mut reader = CountingReader::new(message, CHUNK);
        let mut body = Vec::new();
        while let Some(chunk) = reader
            .next_chunk()
            .await
            .map_err(|e| StoreError::Temporary(format!("reading the message: {e}")))?
        {
            body.extend_from_slice(chunk);
        }
        let mut mailboxes = self.lock();
        let m = mailboxes.entry(self.mailbox_key(mailbox)).or_default();
        if let Some(u) = carried
            && m.messages.iter().any(|s| s.uidl() == u)
        {
            return Err(StoreError::Permanent(format!(
                "UIDL {u} is in the mailbox already"
            )));
        }
        m.next_uid = m
            .next_uid
            .checked_add(1)
            .ok_or_else(|| StoreError::Permanent("out of UIDs".into()))?;
        let stored = Stored {
            uid: m.next_uid,
            size: reader.pop3_size(),
            body: body.into(),
            carried: carried.map(Arc::from),
        };
        let uidl = stored.uidl();
        m.messages.push(stored);
        Ok(uidl)
    }
}

/// A session's snapshot of a [`MemoryStore`] mailbox.
pub struct MemoryDrop {
    store: MemoryStore,
    key: String,
    snapshot: Vec<Stored>,
    messages: Vec<MessageInfo>,
}

#[async_trait]
impl Maildrop for MemoryDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError> {
        let uid = message_at(&self.snapshot, index)?.uid;
        // Still there? Another session may have expunged it.
        let present = self
            .store
            .lock()
            .get(&self.key)
            .is_some_and(|m| m.messages.iter().any(|s| s.uid == uid));
        if !present {
            return Err(StoreError::Gone);
        }
        Ok(Box::pin(std::io::Cursor::new(
            self.snapshot[index].body.clone(),
        )))
    }

    async fn expunge(
        &mut self,
        indexes: &[usize],
        fence: u64,
    ) -> Result<ExpungeReport, StoreError> {
        let indexes = expunge_targets(indexes, self.snapshot.len())?;
        if indexes.is_empty() {
            return Ok(ExpungeReport::default());
        }
        let mut mailboxes = self.store.lock();
        let Some(m) = mailboxes.get_mut(&self.key) else {
            return Ok(ExpungeReport {
                deleted: 0,
                already_gone: indexes.len(),
            });
        };
        // Check and delete under one lock: refused means nothing deleted.
        if fence < m.fence {
            return Err(StoreError::Fenced(fence));
        }
        m.fence = fence;
        let uids: Vec<u32> = indexes.iter().map(|&i| self.snapshot[i].uid).collect();
        let before = m.messages.len();
        m.messages.retain(|s| !uids.contains(&s.uid));
        let deleted = before - m.messages.len();
        Ok(ExpungeReport {
            deleted,
            already_gone: uids.len() - deleted,
        })
    }

    fn expunge_is_atomic(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, Capabilities};

    #[tokio::test]
    async fn memory_store_passes_the_conformance_kit() {
        let store = MemoryStore::new();
        conformance::run(&store, "tenant-x", Capabilities { fencing: true }).await;
        // A second tenant on the same store starts from scratch.
        conformance::run(&store, "tenant-y", Capabilities { fencing: true }).await;
    }

    #[tokio::test]
    async fn a_failed_delivery_stores_nothing() {
        struct Broken;
        impl tokio::io::AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::other("broken pipe")))
            }
        }
        let store = MemoryStore::new();
        let mb = MailboxId::new("t", "bob", "example.org");
        let err = store.append(&mb, Box::pin(Broken)).await.unwrap_err();
        assert!(err.is_temporary(), "{err}");
        assert_eq!(store.count(&mb), 0);
    }
}
