//! The check a mailbox passes before it counts as done, against one
//! listing of the destination taken after the copy:
//!
//! - every source UIDL is listed, in the source's order, with the source's
//!   POP3 size (the destination's own figure, counted from what it stored);
//! - a message this run copied was read once, and what was read, summed on
//!   the way to the store, had the size the source lists (checked while
//!   copying);
//! - a message found at the destination already (an earlier run, perhaps
//!   cut before its own check) is read again on both sides: the SHA-256 of
//!   what each serves (CRLF-normalised, as POP3 sends it) must be the same.
//!
//! A difference is the index of the first message at fault and why.

use std::collections::HashMap;

use futures_util::StreamExt;
use popgate_store::{Maildrop, MessageInfo};

use super::digest::{self, Sum};

/// How many messages found at the destination already are read again at once.
const REREAD_CONCURRENCY: usize = 8;

/// `Ok(None)`: the destination holds every source message. `Ok(Some((i,
/// why)))`: message `i` (0-based, in source order) is the first at fault.
/// `Err`: a side could not be read.
pub async fn mailbox(
    source: &dyn Maildrop,
    dest: &dyn Maildrop,
    listed: &[MessageInfo],
    copied: &HashMap<usize, Sum>,
) -> Result<Option<(usize, String)>, String> {
    let at: HashMap<&str, usize> = dest
        .messages()
        .iter()
        .enumerate()
        .map(|(j, m)| (m.uidl.as_str(), j))
        .collect();
    let mut failure = None;
    let mut last = None;
    let mut reread = Vec::new();
    for (i, m) in listed.iter().enumerate() {
        let fault = |what: &str| Some((i, format!("message {} (UIDL {}) {what}", i + 1, m.uidl)));
        let Some(&j) = at.get(m.uidl.as_str()) else {
            failure = fault("is missing at the destination");
            break;
        };
        if last.is_some_and(|l| j <= l) {
            failure = fault("is out of order at the destination");
            break;
        }
        last = Some(j);
        let dest_size = dest.messages()[j].size;
        if dest_size != m.size {
            failure = fault(&format!(
                "is listed with {dest_size} octets at the destination, {} at the source",
                m.size
            ));
            break;
        }
        if !copied.contains_key(&i) {
            reread.push((i, j));
        }
    }
    // Read again, in order, a few at once; the first difference wins (and
    // one before `failure`, if any, comes first).
    let mut checks = futures_util::stream::iter(reread)
        .map(|(i, j)| async move { (i, reread_one(source, dest, i, j, listed[i].size).await) })
        .buffered(REREAD_CONCURRENCY);
    while let Some((i, result)) = checks.next().await {
        if let Some(problem) = result? {
            let m = &listed[i];
            return Ok(Some((
                i,
                format!("message {} (UIDL {}): {problem}", i + 1, m.uidl),
            )));
        }
    }
    Ok(failure)
}

/// Reads source message `i` and destination message `j` again and compares
/// what each serves. `Some(problem)` on a difference.
async fn reread_one(
    source: &dyn Maildrop,
    dest: &dyn Maildrop,
    i: usize,
    j: usize,
    listed_size: u64,
) -> Result<Option<String>, String> {
    let read = |what: &'static str, e: std::io::Error| format!("reading the {what} again: {e}");
    let source_now = digest::sum(
        source
            .fetch(i)
            .await
            .map_err(|e| format!("reading source message {} again: {e}", i + 1))?,
    )
    .await
    .map_err(|e| read("source", e))?;
    if source_now.size != listed_size {
        return Ok(Some(format!(
            "the source now sends {} octets but lists {listed_size}: it changed during the copy",
            source_now.size
        )));
    }
    let dest_now = digest::sum(
        dest.fetch(j)
            .await
            .map_err(|e| format!("reading the copy of message {}: {e}", i + 1))?,
    )
    .await
    .map_err(|e| read("destination", e))?;
    if dest_now != source_now {
        return Ok(Some(format!(
            "the copy differs from the source ({} octets, checksum {})",
            dest_now.size,
            hex(&dest_now.sha256[..6])
        )));
    }
    Ok(None)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
