//! A reader that fails when its source stalls: a message body streaming
//! from S3 that sends nothing for `timeout` ends with a timed-out error
//! instead of holding the session forever. Only time spent waiting for
//! the source counts, not time the consumer takes between reads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

pub struct IdleTimeout<R> {
    inner: R,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<R> IdleTimeout<R> {
    pub fn new(inner: R, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleTimeout<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.sleep = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.sleep = None;
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("S3 sent nothing for {timeout:?}"),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_stalled_source_times_out() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = IdleTimeout::new(rx, Duration::from_secs(5));
        tx.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).await.unwrap(), 3);
        let e = r.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_does_not_time_out() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = IdleTimeout::new(rx, Duration::from_secs(5));
        tx.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(r.read(&mut buf).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(r.read(&mut buf).await.unwrap(), 1);
        drop(tx);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"c");
    }
}
