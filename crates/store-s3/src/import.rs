//! Imports (`popgate migrate-mail`): one PUT per message, in order (the
//! listing orders by modification time, so PUTs are never overlapped), and
//! the mailbox's size index updated once at the end (one listing, one
//! write) with every imported message's size and carried UIDL.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use popgate_store::{Importer, MessageStream, StoreError, check_carried_uidl};
use tracing::warn;

use crate::Inner;
use crate::append::Appended;
use crate::index::SizeIndex;
use crate::snapshot::INDEX_NAME;

pub(crate) struct S3Importer {
    inner: Arc<Inner>,
    prefix: String,
    stored: Vec<Appended>,
}

impl S3Importer {
    pub(crate) fn new(inner: Arc<Inner>, prefix: String) -> Self {
        S3Importer {
            inner,
            prefix,
            stored: Vec::new(),
        }
    }
}

#[async_trait]
impl Importer for S3Importer {
    async fn add(&mut self, uidl: &str, message: MessageStream) -> Result<(), StoreError> {
        check_carried_uidl(uidl)?;
        let appended = self.inner.append(&self.prefix, message, Some(uidl)).await?;
        self.stored.push(appended);
        Ok(())
    }

    /// Each PUT stored its message for good; what is left is the index,
    /// a cache: failing to write it costs the next login a GET per
    /// imported message (as for mail any other writer put there), no mail.
    /// The entries are keyed by the versions one listing gives (the ETag,
    /// or size and time where a server lists no ETag), as a login's are.
    async fn finish(self: Box<Self>) -> Result<(), StoreError> {
        if self.stored.is_empty() {
            return Ok(());
        }
        let (listed, stored_index) = match (
            self.inner.list(&self.prefix).await,
            self.inner.load_index(&self.prefix).await,
        ) {
            (Ok(l), Ok(i)) => (l, i),
            (Err(e), _) | (_, Err(e)) => {
                warn!(prefix = self.prefix, error = %e, "cannot update the size index");
                return Ok(());
            }
        };
        let versions: HashMap<&str, std::borrow::Cow<'_, str>> =
            listed.iter().map(|o| (o.rel(), o.version())).collect();
        let mut index = stored_index.unwrap_or_else(SizeIndex::new);
        for a in &self.stored {
            if let Some(version) = versions.get(a.rel.as_str()) {
                index.insert(&a.rel, version, a.pop3_size, Some(&a.uidl));
            }
        }
        let key = Inner::reserved_key(&self.prefix, INDEX_NAME);
        if let Err(e) = self
            .inner
            .put_small(&key, index.to_bytes(), "application/json")
            .await
        {
            warn!(key, error = %e, "cannot write the size index");
        }
        Ok(())
    }
}
