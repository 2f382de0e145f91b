//! Delivery: a message streamed into one new object, its POP3 size counted
//! on the way and stored as `x-amz-meta-pop3-size`.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use popgate_store::{MessageStream, StoreError};
use tokio::io::AsyncWriteExt;
use tracing::debug;

use crate::client::{classify, io_temporary};
use crate::{Inner, SIZE_METADATA, UIDL_METADATA, uidl_for};

/// Messages up to this size are uploaded from memory; larger ones are
/// spooled to a temporary file first (their size metadata must be known
/// before the upload starts).
const IN_MEMORY_UPLOAD: usize = 8 << 20;
const CHUNK: usize = 64 * 1024;

impl Inner {
    /// Stores `message` as a new object under `prefix`; returns its UIDL
    /// (the `carried` one, kept as `x-amz-meta-pop3-uidl`, else the key's)
    /// and what the size index needs to know of it.
    pub(crate) async fn append(
        &self,
        prefix: &str,
        message: MessageStream,
        carried: Option<&str>,
    ) -> Result<Appended, StoreError> {
        let inner = self;
        let name = new_object_name();
        let key = format!("{prefix}{name}");

        // Up to IN_MEMORY_UPLOAD in memory; past that, spool to a file.
        let mut head = Vec::with_capacity(CHUNK);
        let mut message = popgate_store::CountingReader::new(message, CHUNK);
        let mut spool: Option<(tempfile::TempPath, tokio::fs::File)> = None;
        while let Some(chunk) = message
            .next_chunk()
            .await
            .map_err(|e| io_temporary("reading the message", e))?
        {
            let n = chunk.len();
            match &mut spool {
                Some((_, file)) => file
                    .write_all(chunk)
                    .await
                    .map_err(|e| io_temporary("spooling the message", e))?,
                None if head.len() + n <= IN_MEMORY_UPLOAD => head.extend_from_slice(chunk),
                None => {
                    let (file, path) = tempfile::NamedTempFile::new()
                        .map_err(|e| io_temporary("creating a spool file", e))?
                        .into_parts();
                    let mut file = tokio::fs::File::from_std(file);
                    file.write_all(&head)
                        .await
                        .and(file.write_all(chunk).await)
                        .map_err(|e| io_temporary("spooling the message", e))?;
                    head = Vec::new();
                    spool = Some((path, file));
                }
            }
        }
        let (stored, pop3_size) = (message.octets(), message.pop3_size());
        let body = match &mut spool {
            None => ByteStream::from(head),
            Some((path, file)) => {
                file.flush()
                    .await
                    .map_err(|e| io_temporary("spooling the message", e))?;
                ByteStream::read_from()
                    .path(&**path)
                    .buffer_size(CHUNK)
                    .build()
                    .await
                    .map_err(|e| StoreError::Temporary(format!("reading the spool file: {e}")))?
            }
        };
        let mut put = inner
            .client
            .put_object()
            .bucket(&inner.bucket)
            .key(&key)
            .content_type("message/rfc822")
            .content_length(stored as i64)
            .metadata(SIZE_METADATA, pop3_size.to_string());
        if let Some(uidl) = carried {
            put = put.metadata(UIDL_METADATA, uidl);
        }
        put.body(body)
            .send()
            .await
            .map_err(|e| classify(&format!("storing {key}"), e))?;
        debug!(key, stored, pop3_size, "delivered");
        Ok(Appended {
            uidl: carried.map_or_else(|| uidl_for(&name), str::to_owned),
            rel: name,
            pop3_size,
        })
    }
}

/// A stored message: its UIDL, the key relative to the prefix and its POP3
/// size (what the size index keeps of it).
pub(crate) struct Appended {
    pub(crate) uidl: String,
    pub(crate) rel: String,
    pub(crate) pop3_size: u64,
}

/// A fresh object name: microseconds since the epoch (so names sort in
/// delivery order when S3's modification times tie) and 64 random bits.
fn new_object_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Without the OS's randomness, the process id and the clock still keep
    // names apart (and a name is a UIDL: it must never be reused).
    let random = getrandom::u64()
        .unwrap_or_else(|_| (u64::from(std::process::id()) << 32) ^ u64::from(now.subsec_nanos()));
    format!("{}.{:06}.{random:016x}", now.as_secs(), now.subsec_micros())
}
