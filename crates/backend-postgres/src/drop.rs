//! One session's maildrop snapshot, streaming reads, and the fenced expunge.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use popgate_store::{ExpungeReport, Maildrop, MessageInfo, MessageStream, StoreError};
use sqlx::postgres::PgPool;
use tokio::io::{AsyncRead, ReadBuf};

use crate::db_error;

/// Where a message's body is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handle {
    pub id: i64,
    pub chunks: i32,
}

/// The snapshot of one mailbox, taken by [`crate::PgStore`]'s `open`.
pub struct PgDrop {
    pool: PgPool,
    tenant: String,
    login: String,
    messages: Vec<MessageInfo>,
    handles: Vec<Handle>,
}

impl PgDrop {
    pub(crate) fn new(
        pool: PgPool,
        tenant: String,
        login: String,
        messages: Vec<MessageInfo>,
        handles: Vec<Handle>,
    ) -> Self {
        PgDrop {
            pool,
            tenant,
            login,
            messages,
            handles,
        }
    }
}

#[async_trait]
impl Maildrop for PgDrop {
    /// One transaction: a failed expunge deleted nothing.
    fn expunge_is_atomic(&self) -> bool {
        true
    }

    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    /// One query: whether the message is still there, and its first chunk
    /// (all of most mail); the rest is read chunk by chunk as the session
    /// sends.
    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError> {
        let handle = *popgate_store::message_at(&self.handles, index)?;
        let row: Option<(Option<Vec<u8>>,)> = sqlx::query_as(
            "SELECT c.data FROM messages m \
             LEFT JOIN message_chunks c ON c.message_id = m.id AND c.seq = 0 \
             WHERE m.id = $1",
        )
        .bind(handle.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("looking up the message", &e))?;
        let Some((first,)) = row else {
            return Err(StoreError::Gone);
        };
        let mut reader = ChunkReader::new(self.pool.clone(), handle.id, handle.chunks);
        if let Some(first) = first {
            reader.buf = first;
            reader.next_seq = 1;
        }
        Ok(Box::pin(reader))
    }

    async fn expunge(
        &mut self,
        indexes: &[usize],
        fence: u64,
    ) -> Result<ExpungeReport, StoreError> {
        let indexes = popgate_store::expunge_targets(indexes, self.handles.len())?;
        if indexes.is_empty() {
            return Ok(ExpungeReport::default());
        }
        let ids: Vec<i64> = indexes.iter().map(|&i| self.handles[i].id).collect();
        let token = i64::try_from(fence).unwrap_or(i64::MAX);
        let err = |e: sqlx::Error| db_error("expunging", &e);

        let mut tx = self.pool.begin().await.map_err(err)?;
        let mailbox: Option<(i64, i64)> = sqlx::query_as(
            "SELECT id, fence FROM mailboxes WHERE tenant = $1 AND login = $2 FOR UPDATE",
        )
        .bind(&self.tenant)
        .bind(&self.login)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        let Some((mailbox_id, committed)) = mailbox else {
            // The mailbox row is gone, and its messages with it.
            return Ok(ExpungeReport {
                deleted: 0,
                already_gone: ids.len(),
            });
        };
        if token < committed {
            // Dropping the transaction rolls it back: nothing changed.
            return Err(StoreError::Fenced(fence));
        }
        if token > committed {
            sqlx::query("UPDATE mailboxes SET fence = $2 WHERE id = $1")
                .bind(mailbox_id)
                .bind(token)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        let deleted = sqlx::query("DELETE FROM messages WHERE mailbox_id = $1 AND id = ANY($2)")
            .bind(mailbox_id)
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
        tx.commit().await.map_err(err)?;
        let deleted = usize::try_from(deleted).unwrap_or(ids.len()).min(ids.len());
        Ok(ExpungeReport {
            deleted,
            already_gone: ids.len() - deleted,
        })
    }
}

type ChunkFuture = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, sqlx::Error>> + Send>>;

/// Streams a message's chunks, fetching the next one only when the reader
/// has taken the previous one: at most one chunk in memory, and no
/// connection held between reads (a slow client does not pin one).
struct ChunkReader {
    pool: PgPool,
    message_id: i64,
    chunks: i32,
    next_seq: i32,
    buf: Vec<u8>,
    pos: usize,
    pending: Option<ChunkFuture>,
}

impl ChunkReader {
    fn new(pool: PgPool, message_id: i64, chunks: i32) -> Self {
        ChunkReader {
            pool,
            message_id,
            chunks,
            next_seq: 0,
            buf: Vec::new(),
            pos: 0,
            pending: None,
        }
    }
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.buf.len() {
                let n = out.remaining().min(this.buf.len() - this.pos);
                out.put_slice(&this.buf[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.next_seq >= this.chunks {
                return Poll::Ready(Ok(()));
            }
            let pending = this.pending.get_or_insert_with(|| {
                let pool = this.pool.clone();
                let (id, seq) = (this.message_id, this.next_seq);
                Box::pin(async move {
                    sqlx::query_scalar(
                        "SELECT data FROM message_chunks WHERE message_id = $1 AND seq = $2",
                    )
                    .bind(id)
                    .bind(seq)
                    .fetch_optional(&pool)
                    .await
                })
            });
            let result = ready!(pending.as_mut().poll(cx));
            this.pending = None;
            match result {
                Ok(Some(data)) => {
                    this.buf = data;
                    this.pos = 0;
                    this.next_seq += 1;
                }
                Ok(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "message {} lost its chunk {} while it was read (expunged meanwhile?)",
                            this.message_id, this.next_seq
                        ),
                    )));
                }
                Err(e) => {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "reading message {} chunk {}: {e}",
                        this.message_id, this.next_seq
                    ))));
                }
            }
        }
    }
}
