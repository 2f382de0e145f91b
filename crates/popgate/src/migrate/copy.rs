//! One mailbox, moved: under its locks, copied message by message through
//! the `MailStore` seam, verified, and only then (with `--delete-source`)
//! removed from the source.
//!
//! Resuming is matching by UIDL: a source message whose UIDL the
//! destination lists already is not copied again (the verification then
//! proves it is the same message). Messages are imported in source order,
//! and a copy that fails verification is taken out of the destination
//! again together with every copy made after it in this run, so the
//! destination always holds the source's first messages in order and a
//! re-run goes on from there.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use popgate_lock::{LockError, LockGuard, MailboxLocks};
use popgate_store::{MailStore, MailboxId, StoreError};

use super::digest::{self, Sum, Tee};
use super::progress::Progress;
use super::verify;

/// One mailbox to move.
pub struct Job {
    /// `tenant/login`, for the log and the summary.
    pub label: String,
    pub source: Arc<dyn MailStore>,
    pub source_mailbox: MailboxId,
    /// The source configuration's locks (none for a POP3 server, whose
    /// own session lock serves).
    pub source_locks: Option<Arc<dyn MailboxLocks>>,
    pub dest: Arc<dyn MailStore>,
    pub dest_mailbox: MailboxId,
    pub dest_locks: Arc<dyn MailboxLocks>,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub dry_run: bool,
    pub delete_source: bool,
}

/// What a mailbox's run came to.
#[derive(Debug)]
pub enum Outcome {
    /// Copied (or found copied) and verified.
    Done(Stats),
    /// A session holds the mailbox: try again later.
    InUse(String),
    /// Stopped by SIGINT between two messages; nothing half-done.
    Interrupted,
    Failed(String),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Messages in the source's snapshot.
    pub messages: usize,
    /// Copied by this run (with --dry-run: to be copied).
    pub copied: usize,
    /// Found at the destination from an earlier run.
    pub present: usize,
    /// POP3 octets copied by this run.
    pub bytes: u64,
    /// Source messages deleted (--delete-source).
    pub deleted: usize,
}

/// Errors of the source's POP3 login that mean "in use" carry this.
pub const IN_USE: &str = "[IN-USE]";

pub async fn run(job: &Job, opts: Options, progress: &Progress) -> Outcome {
    match migrate(job, opts, progress).await {
        Ok(outcome) => outcome,
        Err(e) if e.contains(IN_USE) => Outcome::InUse(e),
        Err(e) => Outcome::Failed(e),
    }
}

async fn lock(
    locks: &dyn MailboxLocks,
    key: &str,
    side: &str,
) -> Result<Result<Box<dyn LockGuard>, Outcome>, String> {
    match locks.acquire(key).await {
        Ok(g) => Ok(Ok(g)),
        Err(LockError::InUse) => Ok(Err(Outcome::InUse(format!(
            "{side} mailbox is in use by a session"
        )))),
        Err(e) => Err(format!("{side} lock: {e}")),
    }
}

async fn migrate(job: &Job, opts: Options, progress: &Progress) -> Result<Outcome, String> {
    let source_key = job.source.mailbox_key(&job.source_mailbox);
    let dest_key = job.dest.mailbox_key(&job.dest_mailbox);
    if job.source.backend() == job.dest.backend() && source_key == dest_key {
        // Same kind, same place: possibly the very same mailbox (or two
        // databases keyed alike); one lock covers both, checked below.
        if job.source.backend() == "maildir" || job.source.backend() == "s3" {
            return Err(format!(
                "source and destination are the same mailbox ({source_key})"
            ));
        }
    }
    let source_guard = match &job.source_locks {
        Some(locks) => match lock(&**locks, &source_key, "source").await? {
            Ok(g) => Some(g),
            Err(outcome) => return Ok(outcome),
        },
        None => None,
    };
    // The destination's lock too (sessions on the new configuration), unless
    // it is the same key, which the source's lock holds already.
    let dest_guard = if source_guard.is_some() && source_key == dest_key {
        None
    } else {
        match lock(&*job.dest_locks, &dest_key, "destination").await? {
            Ok(g) => Some(g),
            Err(outcome) => return Ok(outcome),
        }
    };
    let dest_fence = dest_guard
        .as_ref()
        .or(source_guard.as_ref())
        .map_or(0, |g| g.fence());
    let err = |what: &str, e: StoreError| format!("{what}: {e}");

    let mut source = job
        .source
        .open(&job.source_mailbox)
        .await
        .map_err(|e| err("opening the source", e))?;
    let listed: Vec<_> = source.messages().to_vec();
    {
        let mut seen = HashMap::with_capacity(listed.len());
        for (i, m) in listed.iter().enumerate() {
            if let Some(first) = seen.insert(m.uidl.as_str(), i) {
                return Err(format!(
                    "the source lists UIDL {} twice (messages {} and {}): a client could not tell them apart",
                    m.uidl,
                    first + 1,
                    i + 1
                ));
            }
        }
    }
    let dest = job
        .dest
        .open(&job.dest_mailbox)
        .await
        .map_err(|e| err("opening the destination", e))?;
    let present: HashMap<String, u64> = dest
        .messages()
        .iter()
        .map(|m| (m.uidl.clone(), m.size))
        .collect();
    drop(dest);
    let mut stats = Stats {
        messages: listed.len(),
        ..Stats::default()
    };
    progress.add_messages(listed.len() as u64);

    // Copy what the destination lacks, in source order.
    let mut copied: HashMap<usize, Sum> = HashMap::new();
    let mut importer = None;
    // A source message that reads otherwise than listed: copying stops
    // there, and the check below takes this run's copies from it on out.
    let mut changed = None;
    let mut interrupted = false;
    for (i, m) in listed.iter().enumerate() {
        if present.contains_key(&m.uidl) {
            stats.present += 1;
            progress.message_done(0);
            continue;
        }
        if opts.dry_run {
            stats.copied += 1;
            stats.bytes += m.size;
            progress.message_done(m.size);
            continue;
        }
        if progress.stopping.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let imp = match &mut importer {
            Some(imp) => imp,
            None => importer.insert(
                job.dest
                    .importer(&job.dest_mailbox)
                    .await
                    .map_err(|e| err("starting the import", e))?,
            ),
        };
        let stream = source
            .fetch(i)
            .await
            .map_err(|e| err(&format!("reading source message {}", i + 1), e))?;
        let (tee, summer) = Tee::new(stream);
        imp.add(&m.uidl, Box::pin(tee))
            .await
            .map_err(|e| err(&format!("storing message {} (UIDL {})", i + 1, m.uidl), e))?;
        let sum = digest::take(summer);
        stats.copied += 1;
        stats.bytes += sum.size;
        progress.message_done(sum.size);
        let size = sum.size;
        copied.insert(i, sum);
        if size != m.size {
            changed = Some((
                i,
                format!(
                    "message {} (UIDL {}): the source sent {size} octets but lists {}: it changed during the copy",
                    i + 1,
                    m.uidl,
                    m.size
                ),
            ));
            break;
        }
    }
    if let Some(imp) = importer {
        imp.finish()
            .await
            .map_err(|e| err("storing the copies", e))?;
    }
    if opts.dry_run {
        return Ok(Outcome::Done(stats));
    }
    if interrupted {
        return Ok(Outcome::Interrupted);
    }

    // Verify every message against one listing of the destination.
    let mut dest = job
        .dest
        .open(&job.dest_mailbox)
        .await
        .map_err(|e| err("reopening the destination", e))?;
    let failure = match changed {
        Some(c) => Some(c),
        None => verify::mailbox(&*source, &*dest, &listed, &copied).await?,
    };
    if let Some((i, why)) = failure {
        // Take out this run's copies from the failed one on, so that the
        // destination keeps the source's order and a re-run copies them again.
        let at: HashMap<&str, usize> = dest
            .messages()
            .iter()
            .enumerate()
            .map(|(j, m)| (m.uidl.as_str(), j))
            .collect();
        let undo: Vec<usize> = copied
            .keys()
            .filter(|&&k| k >= i)
            .filter_map(|k| at.get(listed[*k].uidl.as_str()).copied())
            .collect();
        let mut why = why;
        if !undo.is_empty() {
            match dest.expunge(&undo, dest_fence).await {
                Ok(r) => why.push_str(&format!(
                    "; {} copies of this run removed from the destination again, run again",
                    r.deleted
                )),
                Err(e) => why.push_str(&format!(
                    "; removing this run's copies failed too ({e}): check the destination"
                )),
            }
        }
        return Err(why);
    }
    drop(dest);

    if opts.delete_source && !listed.is_empty() {
        if progress.stopping.load(Ordering::Relaxed) {
            return Ok(Outcome::Interrupted);
        }
        let fence = source_guard.as_ref().map_or(0, |g| g.fence());
        if let Some(g) = &source_guard {
            g.verify()
                .await
                .map_err(|e| format!("the source lock was lost before deleting: {e}"))?;
        }
        source
            .claim(fence)
            .await
            .map_err(|e| err("claiming the source for deletion", e))?;
        let all: Vec<usize> = (0..listed.len()).collect();
        let report = source
            .expunge(&all, fence)
            .await
            .map_err(|e| err("deleting the source messages (all copied and verified)", e))?;
        stats.deleted = report.deleted + report.already_gone;
    }
    drop(source_guard);
    drop(dest_guard);
    Ok(Outcome::Done(stats))
}
