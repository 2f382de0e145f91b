//! Imports (`popgate migrate-mail`) in batches: many messages per
//! transaction, so a mailbox of small messages costs a commit (and its
//! WAL flush) per batch instead of per message.
//!
//! A batch ends after [`BATCH_MESSAGES`] messages, [`BATCH_OCTETS`] octets
//! or [`BATCH_TIME`], whichever comes first, and at [`Importer::finish`].
//! The mailbox row stays locked from a batch's first message to its commit
//! (UIDs show in order), so a delivery into that mailbox waits for at most
//! one batch. A batch that fails, or that a crash cuts, is rolled back
//! whole: its messages are not listed, and a re-run imports them again.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use popgate_store::{Importer, MailboxId, MessageStream, StoreError, check_carried_uidl};
use sqlx::{Postgres, Transaction};

use crate::{PgStore, db_error, message_ids, write_message};

/// Messages per transaction at most.
pub const BATCH_MESSAGES: usize = 100;
/// Stored octets per transaction at most (then the next message starts a new one).
pub const BATCH_OCTETS: u64 = 32 << 20;
/// A batch commits once it has been open this long.
pub const BATCH_TIME: Duration = Duration::from_secs(1);

pub(crate) struct PgImporter {
    store: PgStore,
    mailbox: MailboxId,
    mailbox_id: Option<i64>,
    batch: Option<Batch>,
}

struct Batch {
    tx: Transaction<'static, Postgres>,
    /// Ids taken from the sequence for this batch's messages, in one go.
    ids: Vec<i64>,
    messages: usize,
    octets: u64,
    started: Instant,
}

impl PgImporter {
    pub(crate) fn new(store: PgStore, mailbox: MailboxId) -> Self {
        PgImporter {
            store,
            mailbox,
            mailbox_id: None,
            batch: None,
        }
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        if let Some(batch) = self.batch.take() {
            batch
                .tx
                .commit()
                .await
                .map_err(|e| db_error("committing the imported messages", &e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Importer for PgImporter {
    async fn add(&mut self, uidl: &str, message: MessageStream) -> Result<(), StoreError> {
        check_carried_uidl(uidl)?;
        let mailbox_id = match self.mailbox_id {
            Some(id) => id,
            None => {
                self.store.ensure_schema().await?;
                // Outside the batch's transaction, as at delivery.
                let id = self.store.mailbox_id(&self.mailbox).await?;
                *self.mailbox_id.insert(id)
            }
        };
        let batch = match &mut self.batch {
            Some(b) => b,
            None => {
                let tx = self
                    .store
                    .pool
                    .begin()
                    .await
                    .map_err(|e| db_error("importing", &e))?;
                self.batch.insert(Batch {
                    tx,
                    ids: Vec::new(),
                    messages: 0,
                    octets: 0,
                    started: Instant::now(),
                })
            }
        };
        if batch.ids.is_empty() {
            match message_ids(&mut batch.tx, BATCH_MESSAGES as i32).await {
                Ok(mut ids) => {
                    ids.reverse();
                    batch.ids = ids;
                }
                Err(e) => {
                    self.batch = None;
                    return Err(e);
                }
            }
        }
        let id = batch.ids.pop();
        let written = write_message(&mut batch.tx, mailbox_id, id, message, Some(uidl)).await;
        let (_, octets) = match written {
            Ok(w) => w,
            Err(e) => {
                // The transaction is broken: the whole batch goes.
                self.batch = None;
                return Err(e);
            }
        };
        batch.messages += 1;
        batch.octets += octets;
        if batch.messages >= BATCH_MESSAGES
            || batch.octets >= BATCH_OCTETS
            || batch.started.elapsed() >= BATCH_TIME
        {
            self.commit().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        self.commit().await
    }
}
