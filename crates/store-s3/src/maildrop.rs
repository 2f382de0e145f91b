//! One session's snapshot of a mailbox on S3: fetching a message and
//! expunging the deleted ones.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use futures_util::StreamExt;
use popgate_store::{ExpungeReport, Maildrop, MessageInfo, MessageStream, StoreError};
use tracing::warn;

use crate::body::IdleTimeout;
use crate::bucket::Object;
use crate::client::classify;
use crate::delete::{BatchResult, delete_all};
use crate::{Inner, SIZE_CONCURRENCY};

/// Expunge checks the targets one by one (HEAD) up to this many; above,
/// it lists the prefix once.
const HEAD_CHECK_LIMIT: usize = 32;
/// Deletions that S3 refuses are retried this many times in all.
const DELETE_ATTEMPTS: u32 = 4;

/// One session's snapshot of a mailbox on S3.
///
/// Fencing is best effort. S3 has no conditional multi-object delete (and
/// no transaction spanning a check and a delete), so the newest committed
/// fencing token is kept in `<prefix>.popgate/fence`: an expunge reads it,
/// refuses a token older than it, records its own, then deletes. A session
/// whose lock expired is refused once a newer session has committed an
/// expunge; a race between the check and the delete of two sessions that
/// both believe they hold the lock is not excluded.
pub struct S3Drop {
    pub(crate) inner: Arc<Inner>,
    pub(crate) prefix: String,
    pub(crate) objects: Vec<Object>,
    pub(crate) messages: Vec<MessageInfo>,
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
        let keys: Vec<String> = present.into_iter().map(|o| o.key).collect();
        let wanted = keys.len();
        let inner = self.inner.clone();
        let outcome = delete_all(keys, DELETE_ATTEMPTS, inner.retry_backoff, |batch| {
            let inner = inner.clone();
            async move { inner.delete_batch(batch).await }
        })
        .await;
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
            already_gone,
        })
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
            let listed: std::collections::HashMap<String, String> = self
                .list(prefix)
                .await?
                .into_iter()
                .map(|o| (o.key, o.version))
                .collect();
            return Ok(targets
                .iter()
                .filter(|t| listed.get(&t.key) == Some(&t.version))
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

    /// One DeleteObjects call.
    async fn delete_batch(&self, keys: Vec<String>) -> Result<BatchResult, StoreError> {
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
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
        Ok(BatchResult {
            deleted: out
                .deleted()
                .iter()
                .filter_map(|d| d.key().map(str::to_owned))
                .collect(),
            failed: out
                .errors()
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
