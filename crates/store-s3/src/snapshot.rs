//! Sizing a snapshot: every message's POP3 size from the mailbox's size
//! index (`<prefix>.popgate/sizes.json`, see [`crate::index`]), else from
//! the object's `x-amz-meta-pop3-size`, else by streaming it once; and the
//! index written back when it learned something.

use std::collections::HashSet;

use futures_util::StreamExt;
use popgate_store::{MessageInfo, StoreError};
use tracing::{debug, info, warn};

use crate::body::IdleTimeout;
use crate::bucket::Object;
use crate::client::io_temporary;
use crate::index::SizeIndex;
use crate::{Inner, SIZE_CONCURRENCY, SIZE_METADATA, UIDL_METADATA, uidl_for};

pub(crate) const INDEX_NAME: &str = "sizes.json";
/// its end (keeps the connection reusable); a larger one is dropped.
const DRAIN_LIMIT: i64 = 256 << 10;
/// An index larger than this is ignored (and rebuilt).
const MAX_INDEX: i64 = 64 << 20;

impl Inner {
    /// The messages under `prefix` in POP3 order, with their sizes: the
    /// objects of the snapshot and what the session shows of them.
    pub(crate) async fn snapshot(
        &self,
        prefix: &str,
    ) -> Result<(Vec<Object>, Vec<MessageInfo>), StoreError> {
        let inner = self;
        // The listing and the size index at once: one round trip of
        // latency for the login, not two.
        let started = std::time::Instant::now();
        let (mut objects, stored_index) =
            futures_util::future::try_join(inner.list(prefix), inner.load_index(prefix)).await?;
        debug!(
            prefix,
            entries = stored_index.as_ref().map_or(0, SizeIndex::len),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "listed the mailbox and loaded its size index"
        );
        let had_index = stored_index.is_some();
        let mut index = stored_index.unwrap_or_else(SizeIndex::new);

        let mut sizes: Vec<Option<(u64, Option<String>)>> = objects
            .iter()
            .map(|o| {
                index
                    .get(o.rel(), &o.version())
                    .map(|(s, u)| (s, u.map(str::to_owned)))
            })
            .collect();
        let missing: Vec<usize> = (0..objects.len()).filter(|&i| sizes[i].is_none()).collect();
        let mut changed = false;
        let mut gone = HashSet::new();
        if !missing.is_empty() {
            let started = std::time::Instant::now();
            let results = futures_util::stream::iter(missing.iter().copied())
                .map(|i| {
                    let o = &objects[i];
                    async move { (i, inner.compute_size(o).await) }
                })
                .buffer_unordered(SIZE_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            for (i, r) in results {
                match r {
                    Ok((size, uidl)) => {
                        changed |= index.insert(
                            objects[i].rel(),
                            &objects[i].version(),
                            size,
                            uidl.as_deref(),
                        );
                        sizes[i] = Some((size, uidl));
                    }
                    // Deleted since the listing: not part of this snapshot.
                    Err(StoreError::Gone) => {
                        gone.insert(i);
                    }
                    Err(e) => return Err(e),
                }
            }
            info!(
                prefix,
                sized = missing.len(),
                cached = index.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "sized messages missing from the size index"
            );
        }
        let mut keep = Vec::with_capacity(objects.len());
        let mut messages = Vec::with_capacity(objects.len());
        for (i, o) in objects.drain(..).enumerate() {
            if gone.contains(&i) {
                continue;
            }
            let (size, carried) = sizes[i].take().unwrap_or((0, None));
            messages.push(MessageInfo {
                uidl: carried.unwrap_or_else(|| uidl_for(o.rel())),
                size,
            });
            keep.push(o);
        }
        let live: HashSet<&str> = keep.iter().map(Object::rel).collect();
        changed |= index.retain(&live);
        if changed || (!had_index && !keep.is_empty()) {
            let key = Inner::reserved_key(prefix, INDEX_NAME);
            // A cache: failing to write it costs the next login time, not mail.
            if let Err(e) = inner
                .put_small(&key, index.to_bytes(), "application/json")
                .await
            {
                warn!(key, error = %e, "cannot write the size index");
            }
        }
        Ok((keep, messages))
    }

    pub(crate) async fn load_index(&self, prefix: &str) -> Result<Option<SizeIndex>, StoreError> {
        let key = Self::reserved_key(prefix, INDEX_NAME);
        Ok(match self.get_small(&key, MAX_INDEX).await? {
            None => None,
            Some(bytes) => {
                let parsed = SizeIndex::parse(&bytes);
                if parsed.is_none() {
                    warn!(key, "ignoring a broken size index; it will be rebuilt");
                }
                parsed
            }
        })
    }

    /// The POP3 size of one object (from its metadata, else by reading
    /// it) and the UIDL it carries, if any (a valid one only).
    async fn compute_size(&self, o: &Object) -> Result<(u64, Option<String>), StoreError> {
        let resp = self.get(o).await?;
        let metadata = |name: &str| {
            resp.metadata().and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            })
        };
        let carried = metadata(UIDL_METADATA).filter(|u| {
            let ok = popgate_store::valid_uidl(u);
            if !ok {
                warn!(key = o.key, uidl = %u, "ignoring a carried UIDL that breaks RFC 1939");
            }
            ok
        });
        let from_metadata = metadata(SIZE_METADATA).and_then(|v| v.parse::<u64>().ok());
        if let Some(size) = from_metadata {
            if resp.content_length().unwrap_or(i64::MAX) <= DRAIN_LIMIT {
                // Read the rest so the connection goes back to the pool.
                let _ = resp.body.collect().await;
            }
            return Ok((size, carried));
        }
        let body = IdleTimeout::new(Box::pin(resp.body.into_async_read()), self.read_timeout);
        popgate_store::pop3_size(body)
            .await
            .map(|size| (size, carried))
            .map_err(|e| io_temporary(&format!("reading {}", o.key), e))
    }
}
