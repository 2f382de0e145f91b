//! S3 store: serves mail that lands in a bucket, one object per message.
//!
//! An MTA, a cloud inbound-mail service or `popgate deliver` writes each
//! received message as one object (the raw RFC 5322 bytes) under the
//! mailbox's prefix (`prefix = "%d/%n/"` by default). Works against AWS S3
//! and S3-compatible servers (MinIO, Ceph, R2, s3s-fs).
//!
//! - **Snapshot.** `open` lists the prefix, every page. Keys ending in `/`
//!   (folder markers) and everything under `<prefix>.popgate/` (popgate's
//!   own objects) are not messages. Order: last-modified time, then key;
//!   the snapshot is fixed for the session.
//! - **UIDL.** Derived from the key only (see [`uidl_for`]): the key
//!   relative to the prefix when it is a valid RFC 1939 unique-id, else a
//!   hash-based form that cannot collide with a plain one. An imported
//!   message (`popgate migrate-mail`) carries the UIDL its old store gave
//!   it as object metadata `x-amz-meta-pop3-uidl`, which wins (and is kept
//!   in the size index with the size).
//! - **Sizes.** `append` stores the CRLF-normalised size as object metadata
//!   `x-amz-meta-pop3-size`, counted while the message streams in. Any
//!   writer may set it. For objects without it the size is computed once by
//!   streaming the object, then kept in a per-mailbox index object
//!   (`<prefix>.popgate/sizes.json`, keyed by key and ETag) that every
//!   replica shares, so a login reads that one object, not every message.
//! - **Fetch.** A GET whose body is handed to the session as it arrives,
//!   chunk by chunk; dropping the stream (TOP) stops the download.
//! - **Expunge.** DeleteObjects in batches of at most 1000 keys; keys that
//!   fail are retried with backoff; if any still fail the expunge fails and
//!   reports nothing deleted. With conditional writes (see
//!   [`ConditionalWrites`]) the fence is a compare-and-swap claimed at open,
//!   and each delete carries the ETag the snapshot saw; without, fencing is
//!   best effort: see [`S3Drop`].
//! - **Failures.** Every call has connect and per-attempt timeouts and is
//!   retried with exponential backoff; an unreachable or failing S3 is a
//!   [`StoreError::Temporary`] (`-ERR [SYS/TEMP]`).

mod append;
mod body;
mod bucket;
mod client;
mod conditional;
mod config;
mod delete;
mod fence;
mod import;
mod index;
mod maildrop;
mod snapshot;
mod uidl;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use popgate_store::{
    Importer, MailStore, MailboxId, Maildrop, MessageStream, StoreError, check_carried_uidl,
};

use crate::client::classify;

pub use crate::config::{ConditionalWrites, S3Config, StaticCredentials};
pub use crate::maildrop::S3Drop;
pub use crate::uidl::uidl_for;

/// The object metadata that carries a message's POP3 size
/// (`x-amz-meta-pop3-size`).
pub const SIZE_METADATA: &str = "pop3-size";
/// The object metadata that carries an imported message's UIDL
/// (`x-amz-meta-pop3-uidl`); it wins over the key's.
pub const UIDL_METADATA: &str = "pop3-uidl";
/// popgate's own objects live under `<mailbox prefix>` + this.
pub const RESERVED_DIR: &str = ".popgate/";
/// How many objects `open` reads at once when it must compute sizes: S3
/// answers a GET in tens of milliseconds, so a login that must size many
/// new objects is bound by latency, not bandwidth.
const SIZE_CONCURRENCY: usize = 16;

/// A mail store on S3. Cheap to clone.
#[derive(Clone, Debug)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    bucket: String,
    prefix: String,
    read_timeout: Duration,
    page_size: i32,
    retry_backoff: Duration,
    conditional_writes: ConditionalWrites,
    /// The `auto` probe's answer, once asked.
    conditions_honoured: tokio::sync::OnceCell<bool>,
}

impl S3Store {
    /// Checks the configuration and builds the client. Connects to nothing
    /// yet (the first call does), so it needs no runtime.
    pub fn new(config: S3Config) -> Result<Self, String> {
        config
            .validate()
            .map_err(|(field, e)| format!("{field}: {e}"))?;
        let backoff = Duration::from_millis(200);
        Ok(S3Store {
            inner: Arc::new(Inner {
                client: client::build(&config, backoff),
                bucket: config.bucket,
                prefix: config.prefix,
                read_timeout: config.read_timeout,
                page_size: config.list_page_size as i32,
                retry_backoff: backoff,
                conditional_writes: config.conditional_writes,
                conditions_honoured: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The key prefix of a mailbox.
    pub fn mailbox_prefix(&self, mailbox: &MailboxId) -> String {
        mailbox.expand(&self.inner.prefix)
    }
}

#[async_trait]
impl MailStore for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
    }

    /// The bucket and the mailbox's prefix: two logins on one prefix share
    /// the lock.
    fn mailbox_key(&self, mailbox: &MailboxId) -> String {
        format!("s3:{}/{}", self.inner.bucket, self.mailbox_prefix(mailbox))
    }

    /// The snapshot; with conditional writes, the fence object is read at
    /// the same time, for the claim that follows.
    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        let prefix = self.mailbox_prefix(mailbox);
        let ((objects, messages), fence_read) = if self.inner.conditional_known() {
            futures_util::future::try_join(
                self.inner.snapshot(&prefix),
                self.inner.read_fence(&prefix),
            )
            .await?
        } else {
            // The first open: the conditional-write probe (a PUT) waits for
            // the listing to find the bucket.
            let listed = self.inner.snapshot(&prefix).await?;
            (listed, self.inner.read_fence(&prefix).await?)
        };
        Ok(Box::new(S3Drop {
            inner: self.inner.clone(),
            prefix,
            objects,
            messages,
            fence_read,
        }))
    }

    async fn append(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
    ) -> Result<String, StoreError> {
        self.inner
            .append(&self.mailbox_prefix(mailbox), message, None)
            .await
            .map(|a| a.uidl)
    }

    async fn import(
        &self,
        mailbox: &MailboxId,
        uidl: &str,
        message: MessageStream,
    ) -> Result<(), StoreError> {
        check_carried_uidl(uidl)?;
        self.inner
            .append(&self.mailbox_prefix(mailbox), message, Some(uidl))
            .await
            .map(|_| ())
    }

    /// One PUT per message, as [`MailStore::import`]; the size index
    /// learns the imported messages (size, carried UIDL) in one write at
    /// [`Importer::finish`], so the next login (migrate-mail's own check
    /// included) needs no GET per message to size them.
    async fn importer<'a>(
        &'a self,
        mailbox: &MailboxId,
    ) -> Result<Box<dyn Importer + 'a>, StoreError> {
        Ok(Box::new(import::S3Importer::new(
            self.inner.clone(),
            self.mailbox_prefix(mailbox),
        )))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner
            .client
            .head_bucket()
            .bucket(&self.inner.bucket)
            .send()
            .await
            .map_err(|e| match classify("checking the bucket", e) {
                StoreError::Gone => {
                    StoreError::Permanent(format!("bucket {} does not exist", self.inner.bucket))
                }
                other => other,
            })?;
        Ok(())
    }
}
