//! The objects of a mailbox in the bucket: listing them in POP3 order,
//! reading one as it was listed, and popgate's own small objects under
//! `<prefix>.popgate/`.

use std::borrow::Cow;

use aws_sdk_s3::primitives::ByteStream;
use popgate_store::StoreError;
use tracing::debug;

use crate::client::classify;
use crate::{Inner, RESERVED_DIR};

/// One listed object. A session holds one per message for its whole life,
/// so it keeps only what it needs: the relative key is a slice of the key,
/// and the version is made when asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    pub(crate) key: String,
    /// Where the key relative to the mailbox prefix starts.
    rel_start: usize,
    pub(crate) etag: Option<String>,
    /// Stored octets.
    pub(crate) stored: u64,
    pub(crate) modified: (i64, u32),
}

impl Object {
    /// The key relative to the mailbox prefix.
    pub(crate) fn rel(&self) -> &str {
        &self.key[self.rel_start..]
    }

    /// What identifies this content of the key: its ETag, or (for servers
    /// that list none) its size and modification time.
    pub(crate) fn version(&self) -> Cow<'_, str> {
        match &self.etag {
            Some(etag) => Cow::Borrowed(etag),
            None => Cow::Owned(format!(
                "s{}-t{}.{:09}",
                self.stored, self.modified.0, self.modified.1
            )),
        }
    }
}

impl Inner {
    /// Every message object under `prefix`, all pages, in POP3 order.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<Object>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0u32;
        let started = std::time::Instant::now();
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_keys(self.page_size)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify("listing the mailbox", e))?;
            pages += 1;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let Some(rel) = key.strip_prefix(prefix) else {
                    continue;
                };
                if rel.is_empty() || key.ends_with('/') || rel.starts_with(RESERVED_DIR) {
                    continue;
                }
                let stored = o.size().unwrap_or(0).max(0) as u64;
                let modified = o
                    .last_modified()
                    .map(|t| (t.secs(), t.subsec_nanos()))
                    .unwrap_or((0, 0));
                let etag = o.e_tag().filter(|t| !t.is_empty()).map(str::to_owned);
                out.push(Object {
                    key: key.to_owned(),
                    rel_start: prefix.len(),
                    etag,
                    stored,
                    modified,
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) && !t.is_empty() => {
                    token = Some(t.to_owned())
                }
                _ => break,
            }
        }
        debug!(
            prefix,
            objects = out.len(),
            pages,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "listed mailbox"
        );
        out.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.key.cmp(&b.key)));
        Ok(out)
    }

    pub(crate) fn reserved_key(prefix: &str, name: &str) -> String {
        format!("{prefix}{RESERVED_DIR}{name}")
    }

    /// Reads a small object of popgate's own; `None` if there is none.
    pub(crate) async fn get_small(
        &self,
        key: &str,
        limit: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_tagged(key, limit).await?.body)
    }

    pub(crate) async fn put_small(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify(&format!("writing {key}"), e))?;
        Ok(())
    }

    /// Gets a listed object, only while it has the content it was listed
    /// with: a key rewritten with other content is another message.
    pub(crate) async fn get(
        &self,
        o: &Object,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(&o.key);
        if let Some(etag) = &o.etag {
            req = req.if_match(etag);
        }
        req.send()
            .await
            .map_err(|e| classify(&format!("reading {}", o.key), e))
    }
}
