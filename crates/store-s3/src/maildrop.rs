//! One session's snapshot of a mailbox on S3: fetching a message and
//! expunging the deleted ones.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use futures_util::StreamExt;
use popgate_store::{ExpungeReport, Maildrop, MessageInfo, MessageStream, StoreError};
use tracing::warn;

use crate::body::IdleTimeout;
use crate::bucket::Object;
use crate::client::classify;
use crate::conditional::Tagged;
use crate::delete::{BatchResult, delete_all};
use crate::{Inner, SIZE_CONCURRENCY};

/// Expunge checks the targets one by one (HEAD) up to this many; above,
/// it lists the prefix once.
const HEAD_CHECK_LIMIT: usize = 32;
/// Deletions that S3 refuses are retried this many times in all.
const DELETE_ATTEMPTS: u32 = 4;

/// One session's snapshot of a mailbox on S3.
///
/// The newest fencing token is kept in `<prefix>.popgate/fence`.
///
/// - With conditional writes ([`crate::ConditionalWrites`]), a session
///   claims the mailbox when it opens it: a compare-and-swap raises the
///   fence to its token, or refuses the session if a newer one is there. Its
///   expunge checks the fence the same way, then deletes each message with
///   the ETag its snapshot saw, so a message overwritten since is kept. A
///   stale holder (its lock expired, another session opened the mailbox)
///   finds a newer token and deletes nothing. What is left: a stale holder
///   that passed its own check just before a newer session claimed can
///   still delete messages both snapshots saw (S3 has no transaction
///   spanning the fence and the deletes); never a message that changed.
/// - Without (`off`, or a server that ignores conditions), an expunge
///   reads the fence, refuses a token older than it, records its own, then
///   deletes: a stale holder is refused once a newer session has committed;
///   a race between the check and the delete of two sessions that both
///   believe they hold the lock is not excluded.
pub struct S3Drop {
    pub(crate) inner: Arc<Inner>,
    pub(crate) prefix: String,
    pub(crate) objects: Vec<Object>,
    pub(crate) messages: Vec<MessageInfo>,
    /// The fence object as read at open (conditional writes only), for
    /// the claim: its first compare-and-swap round needs no read.
    pub(crate) fence_read: Option<Tagged>,
}

#[async_trait]
impl Maildrop for S3Drop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError> {
        let o = popgate_store::message_at(&self.objects, index)?;
        let resp = self.inner.get(o).await?;
        Ok(Box::pin(IdleTimeout::new(
            Box::pin(resp.body.into_async_read()),
            self.inner.read_timeout,
        )))
    }

    async fn expunge(
        &mut self,
        indexes: &[usize],
        fence: u64,
    ) -> Result<ExpungeReport, StoreError> {
        let indexes = popgate_store::expunge_targets(indexes, self.objects.len())?;
        if indexes.is_empty() {
            return Ok(ExpungeReport::default());
        }
        self.inner.check_fence(&self.prefix, fence).await?;
        let targets: Vec<Object> = indexes.iter().map(|&i| self.objects[i].clone()).collect();
        let present = self.inner.still_present(&self.prefix, &targets).await?;
        let already_gone = targets.len() - present.len();
        // With conditional deletes, each key goes only if its ETag is still
        // the snapshot's: a message overwritten since is another message.
        let etags: Arc<HashMap<String, String>> = Arc::new(if self.inner.conditional().await? {
            present
                .iter()
                .filter_map(|o| Some((o.key.clone(), o.etag.clone()?)))
                .collect()
        } else {
            HashMap::new()
        });
        let keys: Vec<String> = present.into_iter().map(|o| o.key).collect();
        let wanted = keys.len();
        let inner = self.inner.clone();
        let outcome = delete_all(keys, DELETE_ATTEMPTS, inner.retry_backoff, |batch| {
            let (inner, etags) = (inner.clone(), etags.clone());
            async move { inner.delete_batch(batch, &etags).await }
        })
        .await;
        if outcome.changed > 0 {
            warn!(
                prefix = %self.prefix,
                kept = outcome.changed,
                "messages overwritten since the session opened the mailbox were kept"
            );
        }
        if !outcome.failed.is_empty() {
            warn!(
                prefix = %self.prefix,
                failed = outcome.failed.len(),
                wanted,
                keys = ?outcome.failed.iter().take(5).collect::<Vec<_>>(),
                "messages could not be deleted"
            );
            let text = format!(
                "{} of {wanted} messages could not be deleted: {}",
                outcome.failed.len(),
                outcome
                    .last_error
                    .as_deref()
                    .unwrap_or("no confirmation from S3")
            );
            return Err(if outcome.permanent {
                StoreError::Permanent(text)
            } else {
                StoreError::Temporary(text)
            });
        }
        Ok(ExpungeReport {
            deleted: outcome.deleted,
            already_gone: already_gone + outcome.changed,
        })
    }

    /// With conditional writes, bumps the fence object to this session's
    /// token (compare-and-swap), so an older holder's commit is refused from
    /// now on; refuses if a newer token is there. Best effort (`off`):
    /// nothing until expunge.
    async fn claim(&mut self, fence: u64) -> Result<(), StoreError> {
        if self.inner.conditional().await? {
            let read = self.fence_read.take();
            self.inner
                .check_fence_from(&self.prefix, fence, read)
                .await?;
        }
        Ok(())
    }
}

impl Inner {
    /// Which of these objects still exist with the content the session saw.
    pub(crate) async fn still_present(
        &self,
        prefix: &str,
        targets: &[Object],
    ) -> Result<Vec<Object>, StoreError> {
        if targets.len() > HEAD_CHECK_LIMIT {
            let listed: std::collections::HashMap<String, Object> = self
                .list(prefix)
                .await?
                .into_iter()
                .map(|o| (o.key.clone(), o))
                .collect();
            return Ok(targets
                .iter()
                .filter(|t| {
                    listed
                        .get(&t.key)
                        .is_some_and(|o| o.version() == t.version())
                })
                .cloned()
                .collect());
        }
        let checks = futures_util::stream::iter(targets.iter().cloned())
            .map(|t| async move {
                let head = self
                    .client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(&t.key)
                    .send()
                    .await;
                match head {
                    Ok(h) => {
                        let same = match (&t.etag, h.e_tag()) {
                            (Some(a), Some(b)) => a == b,
                            _ => true,
                        };
                        Ok(same.then_some(t))
                    }
                    Err(e) => match classify(&format!("checking {}", t.key), e) {
                        StoreError::Gone => Ok(None),
                        other => Err(other),
                    },
                }
            })
            .buffer_unordered(SIZE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for c in checks {
            if let Some(t) = c? {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// One DeleteObjects call; a key with an ETag in `etags` is deleted
    /// only while its ETag is that one.
    async fn delete_batch(
        &self,
        keys: Vec<String>,
        etags: &HashMap<String, String>,
    ) -> Result<BatchResult, StoreError> {
        let objects = keys
            .iter()
            .map(|k| {
                ObjectIdentifier::builder()
                    .key(k)
                    .set_e_tag(etags.get(k).cloned())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Permanent(format!("building a delete request: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(false)
            .build()
            .map_err(|e| StoreError::Permanent(format!("building a delete request: {e}")))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| classify("deleting messages", e))?;
        let (changed, errors): (Vec<_>, Vec<_>) = out
            .errors()
            .iter()
            .partition(|e| e.code() == Some("PreconditionFailed"));
        Ok(BatchResult {
            deleted: out
                .deleted()
                .iter()
                .filter_map(|d| d.key().map(str::to_owned))
                .collect(),
            changed: changed
                .iter()
                .filter_map(|e| e.key().map(str::to_owned))
                .collect(),
            failed: errors
                .iter()
                .filter_map(|e| {
                    e.key().map(|k| {
                        (
                            k.to_owned(),
                            format!(
                                "{}: {}",
                                e.code().unwrap_or("error"),
                                e.message().unwrap_or("")
                            ),
                        )
                    })
                })
                .collect(),
        })
    }
}
