//! A client connection: the byte stream, a write buffer that batches
//! responses, and the send timeout.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Any client byte stream: TCP, TLS over TCP, a test pipe.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Flush the response buffer once it holds this much, even mid-command.
pub const FLUSH_AT: usize = 64 * 1024;

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
    send_timeout: Duration,
    /// Where the response being built starts in the outgoing stream (see
    /// [`Conn::mark`]), and its first byte once a flush has sent it.
    mark: (u64, Option<u8>),
    /// Turns true when the shutdown grace is over: a write waiting on a
    /// client that does not read gives up then, not at the send timeout.
    shutdown: Option<watch::Receiver<bool>>,
}

impl Conn {
    pub fn new(io: Box<dyn Io>, send_timeout: Duration) -> Self {
        Conn {
            io,
            out: Vec::with_capacity(4096),
            bytes_sent: 0,
            send_timeout,
            mark: (0, None),
            shutdown: None,
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
                if let Some(i) = self.mark.0.checked_sub(self.bytes_sent)
                    && let Some(&b) = self.out.get(i as usize)
                {
                    self.mark.1 = Some(b);
                }
                self.bytes_sent += self.out.len() as u64;
                self.out.clear();
                // Do not keep a large buffer around after a big RETR.
                if self.out.capacity() > 4 * FLUSH_AT {
                    self.out.shrink_to(4096);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ConnError::SendTimeout(self.send_timeout)),
        }
    }

    /// Marks where the next response starts, so that its status byte can be
    /// read back with [`Conn::marked_byte`] even after a flush sent it.
    pub fn mark(&mut self) {
        self.mark = (self.bytes_sent + self.out.len() as u64, None);
    }

    /// The first byte written at the mark (`b'+'` or `b'-'`), if any yet.
    pub fn marked_byte(&self) -> Option<u8> {
        match self.mark.0.checked_sub(self.bytes_sent) {
            Some(i) => self.out.get(i as usize).copied(),
            None => self.mark.1,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_mark_keeps_the_status_byte_across_flushes() {
        let (client, _peer) = tokio::io::duplex(1 << 20);
        let mut conn = Conn::new(Box::new(client), Duration::from_secs(5));
        conn.out.extend_from_slice(b"-ERR pipelined earlier\r\n");
        conn.mark();
        assert_eq!(conn.marked_byte(), None);
        conn.out.extend_from_slice(b"+OK 12 octets\r\n");
        assert_eq!(conn.marked_byte(), Some(b'+'));
        conn.flush().await.unwrap();
        conn.out.extend_from_slice(b"-a body line\r\n");
        assert_eq!(conn.marked_byte(), Some(b'+'));
        conn.flush().await.unwrap();
        assert_eq!(conn.marked_byte(), Some(b'+'));

        // A flush before the response (a failed login's) does not confuse it.
        conn.mark();
        conn.flush().await.unwrap();
        assert_eq!(conn.marked_byte(), None);
        conn.out.extend_from_slice(b"-ERR [AUTH] no\r\n");
        assert_eq!(conn.marked_byte(), Some(b'-'));
        conn.flush().await.unwrap();
        assert_eq!(conn.marked_byte(), Some(b'-'));
    }
}
