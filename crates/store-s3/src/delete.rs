//! Deleting many keys with DeleteObjects: batches of at most 1000 keys,
//! and the keys S3 did not confirm retried with exponential backoff. Kept
//! apart from the client so the retry rules can be tested on their own.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use popgate_store::StoreError;

/// DeleteObjects takes at most this many keys.
pub const MAX_BATCH: usize = 1000;

/// What one DeleteObjects call answered.
#[derive(Debug, Default)]
pub struct BatchResult {
    pub deleted: Vec<String>,
    /// Keys with the error S3 gave for them.
    pub failed: Vec<(String, String)>,
    /// Keys not deleted because their content changed since the snapshot
    /// (a conditional delete's ETag no longer matched): settled, kept.
    pub changed: Vec<String>,
}

#[derive(Debug, Default)]
pub struct DeleteOutcome {
    /// Keys S3 confirmed deleted.
    pub deleted: usize,
    /// Keys kept because they were overwritten since the snapshot.
    pub changed: usize,
    /// Keys not confirmed after every attempt: they may still exist.
    pub failed: Vec<String>,
    pub last_error: Option<String>,
    /// The last failure was one that retrying does not mend.
    pub permanent: bool,
}

/// Deletes `keys`, `attempts` rounds at most. A key counts as deleted only
/// when a response names it as deleted; a key that a response does not
/// name, or names as failed, or whose whole call failed, is tried again.
pub async fn delete_all<F, Fut>(
    keys: Vec<String>,
    attempts: u32,
    backoff: Duration,
    mut batch: F,
) -> DeleteOutcome
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: Future<Output = Result<BatchResult, StoreError>>,
{
    let mut out = DeleteOutcome::default();
    let mut pending = keys;
    for attempt in 0..attempts.max(1) {
        if pending.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(backoff * 2u32.pow(attempt - 1)).await;
        }
        let mut retry = Vec::new();
        // Whether this round saw a failure worth another round, and one that is not.
        let (mut retriable, mut permanent) = (false, false);
        for chunk in pending.chunks(MAX_BATCH) {
            match batch(chunk.to_vec()).await {
                Ok(result) => {
                    let confirmed: HashSet<&str> =
                        result.deleted.iter().map(String::as_str).collect();
                    let changed: HashSet<&str> =
                        result.changed.iter().map(String::as_str).collect();
                    if let Some((key, e)) = result.failed.first() {
                        out.last_error = Some(format!("{key}: {e}"));
                    }
                    for key in chunk {
                        if confirmed.contains(key.as_str()) {
                            out.deleted += 1;
                        } else if changed.contains(key.as_str()) {
                            out.changed += 1;
                        } else {
                            retriable = true;
                            retry.push(key.clone());
                        }
                    }
                }
                Err(e) => {
                    match &e {
                        StoreError::Permanent(_) => permanent = true,
                        _ => retriable = true,
                    }
                    out.last_error = Some(e.to_string());
                    retry.extend_from_slice(chunk);
                }
            }
        }
        pending = retry;
        out.permanent = !pending.is_empty() && permanent && !retriable;
        if out.permanent {
            // Denied access or a bad request: another round will not help.
            break;
        }
    }
    out.failed = pending;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k{i:05}")).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_at_most_1000_keys() {
        let sizes = Mutex::new(Vec::new());
        let out = delete_all(keys(2500), 3, Duration::from_millis(10), |b| {
            sizes.lock().unwrap().push(b.len());
            async move {
                Ok(BatchResult {
                    deleted: b,
                    ..BatchResult::default()
                })
            }
        })
        .await;
        assert_eq!(*sizes.lock().unwrap(), vec![1000, 1000, 500]);
        assert_eq!(out.deleted, 2500);
        assert!(out.failed.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn partial_failures_are_retried_until_confirmed() {
        let calls = Mutex::new(0);
        let out = delete_all(keys(10), 4, Duration::from_millis(10), |b| {
            let n = {
                let mut c = calls.lock().unwrap();
                *c += 1;
                *c
            };
            async move {
                // First call: the odd keys fail; second: one key is not
                // mentioned at all; third: everything goes.
                let (deleted, failed): (Vec<_>, Vec<_>) = match n {
                    1 => b
                        .iter()
                        .cloned()
                        .partition(|k| k.ends_with(['0', '2', '4', '6', '8'])),
                    2 => (b[1..].to_vec(), vec![]),
                    _ => (b.clone(), vec![]),
                };
                Ok(BatchResult {
                    deleted,
                    failed: failed
                        .into_iter()
                        .map(|k| (k, "InternalError: try again".into()))
                        .collect(),
                    ..BatchResult::default()
                })
            }
        })
        .await;
        assert_eq!(*calls.lock().unwrap(), 3);
        assert_eq!(out.deleted, 10, "each key counted once");
        assert!(out.failed.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn keys_changed_since_the_snapshot_are_kept_and_not_retried() {
        let calls = Mutex::new(0);
        let out = delete_all(keys(3), 4, Duration::from_millis(10), |b| {
            *calls.lock().unwrap() += 1;
            async move {
                let (changed, deleted): (Vec<_>, Vec<_>) =
                    b.into_iter().partition(|k| k == "k00001");
                Ok(BatchResult {
                    deleted,
                    changed,
                    ..BatchResult::default()
                })
            }
        })
        .await;
        assert_eq!(*calls.lock().unwrap(), 1, "a changed key is settled");
        assert_eq!((out.deleted, out.changed, out.failed.len()), (2, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_never_confirmed_are_reported_failed() {
        let out = delete_all(keys(3), 3, Duration::from_millis(10), |b| async move {
            let (deleted, failed): (Vec<_>, Vec<_>) = b.into_iter().partition(|k| k == "k00000");
            Ok(BatchResult {
                deleted,
                failed: failed
                    .into_iter()
                    .map(|k| (k, "AccessDenied: no".into()))
                    .collect(),
                ..BatchResult::default()
            })
        })
        .await;
        // The first key is confirmed in round one; the others never are.
        assert_eq!(out.deleted, 1);
        assert_eq!(out.failed, vec!["k00001".to_string(), "k00002".to_string()]);
        assert!(out.last_error.unwrap().contains("AccessDenied"));
    }

    #[tokio::test(start_paused = true)]
    async fn whole_call_failures_are_retried_and_permanent_ones_stop() {
        let calls = Mutex::new(0);
        let out = delete_all(keys(2), 4, Duration::from_millis(10), |b| {
            *calls.lock().unwrap() += 1;
            let n = *calls.lock().unwrap();
            async move {
                if n < 3 {
                    Err(StoreError::Temporary("connection refused".into()))
                } else {
                    Ok(BatchResult {
                        deleted: b,
                        ..BatchResult::default()
                    })
                }
            }
        })
        .await;
        assert_eq!((out.deleted, out.failed.len()), (2, 0));

        let calls = Mutex::new(0);
        let out = delete_all(keys(2), 4, Duration::from_millis(10), |_b| {
            *calls.lock().unwrap() += 1;
            async move { Err(StoreError::Permanent("AccessDenied".into())) }
        })
        .await;
        assert_eq!(
            *calls.lock().unwrap(),
            1,
            "a permanent failure is not retried"
        );
        assert!(out.permanent);
        assert_eq!(out.failed.len(), 2);
    }
}
