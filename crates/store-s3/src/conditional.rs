//! Conditional writes: whether the server honours them (the `auto` probe),
//! and a compare-and-swap write of one of popgate's small objects.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use popgate_store::StoreError;
use tracing::{info, warn};

use crate::client::classify;
use crate::{ConditionalWrites, Inner, RESERVED_DIR};

/// What a small object holds now, and its ETag (`None`: no object).
pub(crate) struct Tagged {
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) etag: Option<String>,
}

/// The outcome of a compare-and-swap write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Swap {
    Written,
    /// Another writer changed the object since it was read.
    Conflict,
}

/// 412 Precondition Failed, or 409 ConditionalRequestConflict (a concurrent
/// conditional write to the same key): the condition did not hold.
fn is_condition_failure<E>(e: &SdkError<E>) -> bool {
    matches!(
        e.raw_response().map(|r| r.status().as_u16()),
        Some(412 | 409)
    )
}

impl Inner {
    /// Whether [`Inner::conditional`] answers without writing: off, or the
    /// server already probed. The probe is a write; an open runs it only
    /// after its listing found the bucket (a server such as s3s-fs makes a
    /// missing bucket on the first write).
    pub(crate) fn conditional_known(&self) -> bool {
        self.conditional_writes == ConditionalWrites::Off
            || self.conditions_honoured.get().is_some()
    }

    /// Whether commits are fenced by conditional writes, probing the server
    /// once under `auto`. Under `on`, a server that ignores conditions is
    /// an error.
    pub(crate) async fn conditional(&self) -> Result<bool, StoreError> {
        match self.conditional_writes {
            ConditionalWrites::Off => Ok(false),
            mode => {
                let honoured = *self
                    .conditions_honoured
                    .get_or_try_init(|| self.probe())
                    .await?;
                if !honoured && mode == ConditionalWrites::On {
                    return Err(StoreError::Permanent(format!(
                        "conditional_writes = \"on\", but the S3 server at bucket {} ignores If-None-Match",
                        self.bucket
                    )));
                }
                Ok(honoured)
            }
        }
    }

    /// Writes a probe object twice with `If-None-Match: *`: a server that
    /// honours conditions refuses the second write.
    async fn probe(&self) -> Result<bool, StoreError> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| StoreError::Temporary(format!("randomness: {e}")))?;
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let fixed = &self.prefix[..self.prefix.find('%').unwrap_or(self.prefix.len())];
        let key = format!("{fixed}{RESERVED_DIR}probe-{hex}");
        let mut refused_second = None;
        for attempt in 0..2 {
            let put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .if_none_match("*")
                .body(ByteStream::from_static(
                    b"popgate conditional-write probe\n",
                ))
                .send()
                .await;
            match (attempt, put) {
                (0, Ok(_)) => {}
                (0, Err(e)) => {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    if matches!(status, Some(400 | 501)) {
                        // NotImplemented: the server does not know the header.
                        refused_second = Some(false);
                        break;
                    }
                    return Err(classify("probing conditional writes", e));
                }
                (_, Ok(_)) => refused_second = Some(false),
                (_, Err(e)) if is_condition_failure(&e) => refused_second = Some(true),
                (_, Err(e)) => return Err(classify("probing conditional writes", e)),
            }
        }
        let _ = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await;
        let honoured = refused_second.unwrap_or(false);
        if honoured {
            info!(bucket = %self.bucket, "S3 honours conditional writes: commits are fenced by compare-and-swap");
        } else {
            warn!(bucket = %self.bucket, "S3 ignores conditional writes: fencing is best effort (conditional_writes = \"off\" silences this)");
        }
        Ok(honoured)
    }

    /// Reads a small object of popgate's own with its ETag.
    pub(crate) async fn get_tagged(&self, key: &str, limit: i64) -> Result<Tagged, StoreError> {
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return match classify(&format!("reading {key}"), e) {
                    StoreError::Gone => Ok(Tagged {
                        body: None,
                        etag: None,
                    }),
                    other => Err(other),
                };
            }
        };
        let etag = resp.e_tag().map(str::to_owned);
        if resp.content_length().unwrap_or(0) > limit {
            warn!(key, "ignoring an oversized object");
            return Ok(Tagged { body: None, etag });
        }
        let bytes = resp
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Temporary(format!("reading {key}: {e}")))?;
        Ok(Tagged {
            body: Some(bytes.to_vec()),
            etag,
        })
    }

    /// Writes `body` to `key` only if the object is still the one read:
    /// `If-Match: etag`, or `If-None-Match: *` when there was none.
    pub(crate) async fn put_swap(
        &self,
        key: &str,
        body: Vec<u8>,
        read: Option<&str>,
    ) -> Result<Swap, StoreError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("text/plain")
            .body(ByteStream::from(body));
        req = match read {
            Some(etag) => req.if_match(etag),
            None => req.if_none_match("*"),
        };
        match req.send().await {
            Ok(_) => Ok(Swap::Written),
            Err(e) if is_condition_failure(&e) => Ok(Swap::Conflict),
            Err(e) => Err(classify(&format!("writing {key}"), e)),
        }
    }
}
