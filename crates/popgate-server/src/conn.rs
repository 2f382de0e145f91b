//! A client connection: the byte stream, a write buffer that batches
//! responses, and the send timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::observer::SessionObserver;

/// Any client byte stream: TCP, TLS over TCP, a test pipe.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Flush the response buffer once it holds this much, even mid-command.
pub const FLUSH_AT: usize = 64 * 1024;

/// What the response buffer starts with when the client sends a command:
/// most answers fit, and the buffer grows for the rest.
const OUT_START: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("client did not read for {0:?}")]
    SendTimeout(Duration),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The server's shutdown grace ran out while the client was not reading.
    #[error("server shutting down")]
    Shutdown,
}

pub struct Conn {
    pub io: Box<dyn Io>,
    pub out: Vec<u8>,
    pub bytes_sent: u64,
    /// `bytes_sent` again, readable while the session runs (`popgate who`).
    live_sent: Arc<AtomicU64>,
    send_timeout: Duration,
    /// Turns true when the shutdown grace is over: a write waiting on a
    /// client that does not read gives up then, not at the send timeout.
    shutdown: Option<watch::Receiver<bool>>,
    /// Told of the bytes of each completed write, as it completes (a long
    /// RETR shows in the metrics while it runs), under `tenant`. Until the
    /// tenant is known the bytes are `held`: they go to the tenant once the
    /// credentials name it, or to none when the session ends without.
    observer: Option<Arc<dyn SessionObserver>>,
    tenant: Option<String>,
    held: u64,
}

impl Conn {
    pub fn new(io: Box<dyn Io>, send_timeout: Duration) -> Self {
        Conn {
            io,
            out: Vec::new(),
            bytes_sent: 0,
            live_sent: Arc::default(),
            send_timeout,
            shutdown: None,
            observer: None,
            tenant: None,
            held: 0,
        }
    }

    /// The bytes sent so far, as a counter others may read while it grows.
    pub fn sent_counter(&self) -> Arc<AtomicU64> {
        self.live_sent.clone()
    }

    /// Reports the bytes of every completed write to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn SessionObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The tenant the bytes are reported under, from the held ones on (set
    /// when the credentials name the tenant).
    pub fn report_for(&mut self, tenant: &str) {
        self.tenant = Some(tenant.to_owned());
        let held = std::mem::take(&mut self.held);
        self.report(held);
    }

    /// At the session's end: reports what is still held, under no tenant.
    pub fn report_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        if let Some(observer) = &self.observer
            && held > 0
        {
            observer.bytes_sent(None, held);
        }
    }

    fn report(&mut self, bytes: u64) {
        match (&self.observer, &self.tenant) {
            (Some(observer), Some(tenant)) if bytes > 0 => {
                observer.bytes_sent(Some(tenant), bytes);
            }
            (Some(_), None) => self.held += bytes,
            _ => {}
        }
    }

    /// Lets writes be cut short when the server's shutdown grace is over.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Writes out everything buffered, waiting at most the send timeout for
    /// a client that does not read.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        self.flush_with(self.send_timeout, true).await
    }

    async fn flush_with(&mut self, limit: Duration, abortable: bool) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Conn {
            io, out, shutdown, ..
        } = self;
        let write = async {
            io.write_all(out).await?;
            io.flush().await
        };
        let stop = async {
            match shutdown {
                Some(rx) if abortable => {
                    let _ = rx.wait_for(|&stop| stop).await;
                }
                _ => std::future::pending::<()>().await,
            }
        };
        let result = tokio::select! {
            r = tokio::time::timeout(limit, write) => r,
            () = stop => return Err(ConnError::Shutdown),
        };
        match result {
            Ok(Ok(())) => {
                let written = self.out.len() as u64;
                self.bytes_sent += written;
                self.live_sent.store(self.bytes_sent, Ordering::Relaxed);
                self.report(written);
                self.out.clear();
                // Do not keep a large buffer around after a big RETR.
                if self.out.capacity() > 4 * FLUSH_AT {
                    self.out.shrink_to(OUT_START);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ConnError::SendTimeout(self.send_timeout)),
        }
    }

    /// Flushes when the buffer is large.
    pub async fn flush_if_full(&mut self) -> Result<(), ConnError> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Before waiting for the client: an empty response buffer is given
    /// back, so an idle session holds none (thousands of them wait at once).
    pub fn idle(&mut self) {
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = Vec::new();
        }
    }

    /// After the client sent something: room for the answers.
    pub fn busy(&mut self) {
        self.out.reserve(OUT_START);
    }

    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.io.read(buf).await
    }

    /// Best-effort close: flush what is buffered (briefly, even during
    /// shutdown) and shut the stream down.
    pub async fn close(&mut self) {
        let _ = self
            .flush_with(self.send_timeout.min(Duration::from_secs(2)), false)
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}
