//! The one Redis connection the locks (and the fleet-wide limits) share:
//! every call bounded by the operation timeout, retried while time remains,
//! and the connection rebuilt should it stay broken.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ErrorKind, RedisError, RedisResult};
use tokio::time::Instant;

use popgate_lock::LockError;

use super::RETRY_PAUSE;
use super::config::{RedisLocksConfig, redact};

/// The shared, self-reconnecting connection.
pub(super) struct Connection {
    client: ::redis::Client,
    manager_config: ConnectionManagerConfig,
    managed: Mutex<Managed>,
    op_timeout: Duration,
}

/// The current connection manager and how it has been doing.
struct Managed {
    manager: ConnectionManager,
    last_ok: Instant,
    failing_since: Option<Instant>,
    rebuilt: Instant,
}

impl Connection {
    /// Prepares the client without connecting: the first call connects.
    pub(super) fn new(config: &RedisLocksConfig) -> Result<Self, String> {
        let client = config.client()?;
        let op_timeout = config.op_timeout();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                .map_err(|e| format!("{}: {e}", redact(&config.url)))?;
        let now = Instant::now();
        Ok(Connection {
            client,
            manager_config,
            managed: Mutex::new(Managed {
                manager,
                last_ok: now,
                failing_since: None,
                rebuilt: now,
            }),
            op_timeout,
        })
    }

    fn manager(&self) -> ConnectionManager {
        self.managed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .manager
            .clone()
    }

    fn note_ok(&self) {
        let mut m = self.managed.lock().unwrap_or_else(|p| p.into_inner());
        m.last_ok = Instant::now();
        m.failing_since = None;
    }

    /// A call failed at the connection level. The manager reconnects by
    /// itself; should it stay broken (it keeps a failed connection attempt
    /// that was not an I/O error, say), a fresh one replaces it.
    fn note_failure(&self) {
        let now = Instant::now();
        let mut m = self.managed.lock().unwrap_or_else(|p| p.into_inner());
        let since = *m.failing_since.get_or_insert(now);
        let stuck = self.op_timeout.max(Duration::from_secs(1));
        if now - since >= stuck && now - m.rebuilt >= stuck {
            match ConnectionManager::new_lazy_with_config(
                self.client.clone(),
                self.manager_config.clone(),
            ) {
                Ok(fresh) => {
                    tracing::info!(
                        "redis lock connection failing since {:?}, starting afresh",
                        now - since
                    );
                    m.manager = fresh;
                    m.rebuilt = now;
                }
                Err(e) => tracing::warn!(error = %e, "cannot recreate the redis lock connection"),
            }
        }
    }

    /// Runs one Redis call within the operation timeout, retrying calls that
    /// failed at the connection level while time remains. Every call given
    /// here is safe to repeat.
    pub(super) async fn run<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, LockError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.op_timeout;
        loop {
            let result = tokio::time::timeout_at(deadline, call(self.manager())).await;
            let error = match result {
                Ok(Ok(value)) => {
                    self.note_ok();
                    return Ok(value);
                }
                Ok(Err(e)) if is_server_reply(&e) => {
                    // Redis answered: reachable, but refused (a script error,
                    // LOADING after a restart, READONLY on a replica).
                    self.note_ok();
                    e.to_string()
                }
                Ok(Err(e)) => {
                    self.note_failure();
                    e.to_string()
                }
                Err(_) => {
                    self.note_failure();
                    format!("no answer within {:?}", self.op_timeout)
                }
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(LockError::Unavailable(format!("redis {what}: {error}")));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

fn is_server_reply(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(_))
}
