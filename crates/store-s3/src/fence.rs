//! Best-effort fencing: the newest committed fencing token of a mailbox,
//! kept in `<prefix>.popgate/fence` (see [`S3Drop`](crate::S3Drop)).

use popgate_store::StoreError;
use tracing::{info, warn};

use crate::Inner;

const FENCE_NAME: &str = "fence";

impl Inner {
    /// Refuses `fence` if the mailbox's fence object holds a newer token;
    /// else records `fence` there (when it is newer) so older sessions are
    /// refused from now on. Check and record are two calls: best effort.
    pub(crate) async fn check_fence(&self, prefix: &str, fence: u64) -> Result<(), StoreError> {
        let key = Self::reserved_key(prefix, FENCE_NAME);
        let current = match self.get_small(&key, 1024).await? {
            None => 0,
            Some(bytes) => match std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(n) => n,
                None => {
                    warn!(key, "ignoring a corrupt fence object");
                    0
                }
            },
        };
        if fence < current {
            info!(
                prefix,
                fence, current, "refusing expunge with a stale fence"
            );
            return Err(StoreError::Fenced(fence));
        }
        if fence > current {
            self.put_small(&key, format!("{fence}\n").into_bytes(), "text/plain")
                .await?;
        }
        Ok(())
    }
}
