//! Fencing: the newest fencing token of a mailbox, kept in
//! `<prefix>.popgate/fence` (see [`S3Drop`](crate::S3Drop)).
//!
//! With conditional writes the object is a compare-and-swap register: read
//! it with its ETag, refuse a token older than it, and write ours with
//! `If-Match` (or `If-None-Match: *` when there is none); a write that lost
//! a race is read again. A session claims the mailbox this way when it
//! opens it, so a stale holder's later commit finds a newer token and is
//! refused. Without them, check and record are two calls: best effort.

use popgate_store::StoreError;
use tracing::{info, warn};

use crate::Inner;
use crate::conditional::{Swap, Tagged};

const FENCE_NAME: &str = "fence";
/// Compare-and-swap rounds before giving up (each lost round means another
/// session wrote the fence meanwhile).
const SWAP_ROUNDS: u32 = 8;

fn parse(key: &str, body: Option<&[u8]>) -> u64 {
    match body {
        None => 0,
        Some(bytes) => match std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            Some(n) => n,
            None => {
                warn!(key, "ignoring a corrupt fence object");
                0
            }
        },
    }
}

fn stale(prefix: &str, fence: u64, current: u64) -> StoreError {
    info!(prefix, fence, current, "refusing a stale fence");
    StoreError::Fenced(fence)
}

impl Inner {
    /// Refuses `fence` if the mailbox's fence object holds a newer token;
    /// else records `fence` there (when it is newer) so older sessions are
    /// refused from now on.
    pub(crate) async fn check_fence(&self, prefix: &str, fence: u64) -> Result<(), StoreError> {
        self.check_fence_from(prefix, fence, None).await
    }

    /// The fence object with its ETag, for [`Inner::check_fence_from`], when
    /// commits are fenced by compare-and-swap (`None` otherwise).
    pub(crate) async fn read_fence(&self, prefix: &str) -> Result<Option<Tagged>, StoreError> {
        if !self.conditional().await? {
            return Ok(None);
        }
        let key = Self::reserved_key(prefix, FENCE_NAME);
        self.get_tagged(&key, 1024).await.map(Some)
    }

    /// [`Inner::check_fence`], starting from `read` when the fence object
    /// was already read ([`Inner::read_fence`], at open): a write that
    /// finds the object changed since reads it again.
    pub(crate) async fn check_fence_from(
        &self,
        prefix: &str,
        fence: u64,
        mut read: Option<Tagged>,
    ) -> Result<(), StoreError> {
        let key = Self::reserved_key(prefix, FENCE_NAME);
        if !self.conditional().await? {
            let current = parse(&key, self.get_small(&key, 1024).await?.as_deref());
            if fence < current {
                return Err(stale(prefix, fence, current));
            }
            if fence > current {
                self.put_small(&key, format!("{fence}\n").into_bytes(), "text/plain")
                    .await?;
            }
            return Ok(());
        }
        for _ in 0..SWAP_ROUNDS {
            let read = match read.take() {
                Some(read) => read,
                None => self.get_tagged(&key, 1024).await?,
            };
            let current = parse(&key, read.body.as_deref());
            if fence < current {
                return Err(stale(prefix, fence, current));
            }
            if fence == current {
                return Ok(());
            }
            let body = format!("{fence}\n").into_bytes();
            if self.put_swap(&key, body, read.etag.as_deref()).await? == Swap::Written {
                return Ok(());
            }
        }
        Err(StoreError::Temporary(format!(
            "{key}: the fence kept changing under {SWAP_ROUNDS} compare-and-swap rounds"
        )))
    }
}
