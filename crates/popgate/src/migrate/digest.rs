//! The checksum migrate-mail verifies with: SHA-256 of a message as POP3
//! sends it (every line ending CRLF, before dot-stuffing), so a message
//! stored LF-only in a Maildir and CRLF in PostgreSQL or over POP3 is the
//! same message, and its length is the POP3 size.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pop3_proto::crlf::CrlfNormaliser;
use popgate_store::MessageStream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// A message's POP3 size and checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sum {
    pub size: u64,
    pub sha256: Vec<u8>,
}

#[derive(Default)]
pub struct Summer {
    normaliser: CrlfNormaliser,
    hasher: Sha256,
    size: u64,
    out: Vec<u8>,
}

impl Summer {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.out.clear();
        self.normaliser.feed(chunk, &mut self.out);
        self.hasher.update(&self.out);
        self.size += self.out.len() as u64;
    }

    pub fn finish(self) -> Sum {
        Sum {
            size: self.size,
            sha256: self.hasher.finalize().to_vec(),
        }
    }
}

/// Reads a whole stream, 64 KiB at a time, and sums it.
pub async fn sum(mut stream: MessageStream) -> std::io::Result<Sum> {
    let mut summer = Summer::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(summer.finish());
        }
        summer.feed(&buf[..n]);
    }
}

/// A stream that sums what passes through it, for the store it is handed
/// to: the sum is read from the shared [`Summer`] once the store is done.
pub struct Tee {
    inner: MessageStream,
    summer: Arc<Mutex<Summer>>,
}

impl Tee {
    pub fn new(inner: MessageStream) -> (Self, Arc<Mutex<Summer>>) {
        let summer = Arc::new(Mutex::new(Summer::default()));
        (
            Tee {
                inner,
                summer: summer.clone(),
            },
            summer,
        )
    }
}

impl AsyncRead for Tee {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            if !fresh.is_empty() {
                self.summer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .feed(fresh);
            }
        }
        polled
    }
}

/// Takes the sum out of a [`Tee`]'s shared summer.
pub fn take(summer: Arc<Mutex<Summer>>) -> Sum {
    let summer = std::mem::take(&mut *summer.lock().unwrap_or_else(|p| p.into_inner()));
    summer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lf_and_crlf_forms_sum_the_same() {
        let lf: MessageStream = Box::pin(std::io::Cursor::new(b"a\nb\n".to_vec()));
        let crlf: MessageStream = Box::pin(std::io::Cursor::new(b"a\r\nb\r\n".to_vec()));
        let (a, b) = (sum(lf).await.unwrap(), sum(crlf).await.unwrap());
        assert_eq!(a, b);
        assert_eq!(a.size, 6);
        let other: MessageStream = Box::pin(std::io::Cursor::new(b"a\r\nc\r\n".to_vec()));
        assert_ne!(sum(other).await.unwrap(), a);
    }

    #[tokio::test]
    async fn a_tee_sums_what_it_passes_on() {
        let (mut tee, summer) = Tee::new(Box::pin(std::io::Cursor::new(b"x\ny".to_vec())));
        let mut out = Vec::new();
        tee.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"x\ny");
        let s = take(summer);
        assert_eq!(s.size, 4);
        let direct: MessageStream = Box::pin(std::io::Cursor::new(b"x\r\ny".to_vec()));
        assert_eq!(s, sum(direct).await.unwrap());
    }
}
