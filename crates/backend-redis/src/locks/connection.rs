//! The one Redis connection the locks (and the fleet-wide limits) share:
//! every call bounded by the operation timeout, retried while time remains,
//! and the connection rebuilt should it stay broken.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::ConnectionManagerConfig;
use ::redis::{ErrorKind, RedisError, RedisResult};
use tokio::sync::watch;
use tokio::time::Instant;

use popgate_lock::LockError;

use super::RETRY_PAUSE;
use super::config::RedisLocksConfig;
use super::endpoint::{Conn, Connector};

/// The shared, self-reconnecting connection.
pub(super) struct Connection {
    connector: Connector,
    manager_config: ConnectionManagerConfig,
    managed: Mutex<Managed>,
    /// One connection attempt at a time (a Sentinel lookup, a Cluster's
    /// first connection); the others wait for its result.
    connecting: tokio::sync::Mutex<()>,
    op_timeout: Duration,
    /// Bumped when a call succeeds after calls failed at the connection
    /// level: Redis is back, perhaps restarted empty, and every held lock
    /// is checked again at once.
    reconnected: watch::Sender<u64>,
}

/// The current connection (`None`: to be made by the next call) and how it
/// has been doing.
struct Managed {
    conn: Option<Conn>,
    last_ok: Instant,
    failing_since: Option<Instant>,
    rebuilt: Instant,
}

impl Connection {
    /// Prepares the client without connecting: the first call connects.
    pub(super) fn new(config: &RedisLocksConfig) -> Result<Self, String> {
        let connector = config.connector()?;
        let op_timeout = config.op_timeout();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let now = Instant::now();
        Ok(Connection {
            connector,
            manager_config,
            managed: Mutex::new(Managed {
                conn: None,
                last_ok: now,
                failing_since: None,
                rebuilt: now,
            }),
            connecting: tokio::sync::Mutex::new(()),
            op_timeout,
            reconnected: watch::Sender::new(0),
        })
    }

    fn managed(&self) -> std::sync::MutexGuard<'_, Managed> {
        self.managed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current connection, made first if there is none.
    async fn conn(&self) -> RedisResult<Conn> {
        if let Some(c) = self.managed().conn.clone() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.managed().conn.clone() {
            return Ok(c);
        }
        let fresh = self.connector.connect(&self.manager_config).await?;
        let mut m = self.managed();
        m.conn = Some(fresh.clone());
        m.rebuilt = Instant::now();
        Ok(fresh)
    }

    fn note_ok(&self) {
        let was_failing = {
            let mut m = self.managed();
            m.last_ok = Instant::now();
            m.failing_since.take().is_some()
        };
        if was_failing {
            tracing::info!("redis lock connection re-established; checking every held lock");
            self.reconnected.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Makes every held lock re-verify now (Redis may have lost its keys).
    pub(super) fn recheck(&self) {
        self.reconnected.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever the connection works again after failing, or
    /// [`Connection::recheck`] is called.
    pub(super) fn reconnects(&self) -> watch::Receiver<u64> {
        self.reconnected.subscribe()
    }

    /// A call failed at the connection level. The connection reconnects by
    /// itself; should it stay broken (it keeps a failed connection attempt
    /// that was not an I/O error, say), the next call makes a fresh one.
    /// Behind Sentinel the master may have moved, so the connection is
    /// dropped at once and the next call asks the sentinels again.
    fn note_failure(&self) {
        let now = Instant::now();
        let mut m = self.managed();
        let since = *m.failing_since.get_or_insert(now);
        let stuck = if self.connector.follows_master() {
            RETRY_PAUSE
        } else {
            self.op_timeout.max(Duration::from_secs(1))
        };
        if m.conn.is_some() && now - since >= stuck && now - m.rebuilt >= stuck {
            tracing::info!(
                "redis lock connection failing since {:?}, starting afresh",
                now - since
            );
            m.conn = None;
        }
    }

    /// The server says it is a replica now: the master moved.
    fn note_demoted(&self) {
        if self.connector.follows_master() {
            tracing::info!("redis answered READONLY: the master moved, asking the sentinels");
            self.managed().conn = None;
        }
    }

    /// Runs one Redis call within the operation timeout, retrying calls that
    /// failed at the connection level while time remains. Every call given
    /// here is safe to repeat.
    pub(super) async fn run<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, LockError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.op_timeout;
        loop {
            let result = tokio::time::timeout_at(deadline, async {
                let conn = self.conn().await?;
                call(conn).await
            })
            .await;
            let error = match result {
                Ok(Ok(value)) => {
                    self.note_ok();
                    return Ok(value);
                }
                Ok(Err(e)) if e.code() == Some("READONLY") => {
                    self.note_demoted();
                    e.to_string()
                }
                Ok(Err(e)) if is_server_reply(&e) => {
                    // Redis answered: reachable, but refused (a script error,
                    // LOADING after a restart).
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
