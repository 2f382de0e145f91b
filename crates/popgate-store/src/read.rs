//! Reading a message stream while counting it: the one loop every store
//! runs when it takes in a message (delivery) or sizes one it did not write.

use std::io;

use pop3_proto::crlf::CrlfCounter;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The chunk size of [`pop3_size`] and [`pop3_size_blocking`].
const SIZE_CHUNK: usize = 64 * 1024;

/// Reads a stream in chunks of a fixed size, counting the octets read and
/// their POP3 size (every line ending as CRLF) on the way.
///
/// ```ignore
/// let mut reader = CountingReader::new(message, CHUNK);
/// while let Some(chunk) = reader.next_chunk().await? {
///     file.write_all(chunk).await?;
/// }
/// let (octets, pop3_size) = (reader.octets(), reader.pop3_size());
/// ```
///
/// Every chunk but the last is full (the reader reads until it has a whole
/// chunk), so a store that keeps chunks (rows, parts) gets them all of one
/// size.
pub struct CountingReader<R> {
    inner: R,
    buf: Vec<u8>,
    counter: CrlfCounter,
    octets: u64,
    eof: bool,
}

impl<R: AsyncRead + Unpin> CountingReader<R> {
    pub fn new(inner: R, chunk: usize) -> Self {
        CountingReader {
            inner,
            buf: vec![0u8; chunk.max(1)],
            counter: CrlfCounter::default(),
            octets: 0,
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        if self.eof {
            return Ok(None);
        }
        let mut filled = 0;
        while filled < self.buf.len() {
            let n = self.inner.read(&mut self.buf[filled..]).await?;
            if n == 0 {
                self.eof = true;
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(None);
        }
        let chunk = &self.buf[..filled];
        self.counter.feed(chunk);
        self.octets += filled as u64;
        Ok(Some(chunk))
    }

    /// Octets read so far, as stored.
    pub fn octets(&self) -> u64 {
        self.octets
    }

    /// The POP3 size of what was read so far.
    pub fn pop3_size(&self) -> u64 {
        self.counter.finish()
    }
}

/// Reads a whole stream and returns its POP3 size (CRLF-normalised octets).
/// For stores that must compute the size of a message they did not write.
pub async fn pop3_size<R: AsyncRead + Unpin>(stream: R) -> io::Result<u64> {
    let mut reader = CountingReader::new(stream, SIZE_CHUNK);
    while reader.next_chunk().await?.is_some() {}
    Ok(reader.pop3_size())
}

/// [`pop3_size`] for a blocking reader (a file read on the blocking pool).
pub fn pop3_size_blocking(mut reader: impl io::Read) -> io::Result<u64> {
    let mut counter = CrlfCounter::default();
    let mut buf = vec![0u8; SIZE_CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(counter.finish()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        counter.feed(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns one byte a read: chunks must still come out full.
    struct OneByte(&'static [u8]);

    impl AsyncRead for OneByte {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if let Some((first, rest)) = self.0.split_first() {
                buf.put_slice(&[*first]);
                self.0 = rest;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn chunks_are_full_and_counts_are_right() {
        let mut r = CountingReader::new(OneByte(b"a\nb\r\nc\rd\n"), 4);
        let mut chunks = Vec::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            chunks.push(c.to_vec());
        }
        assert_eq!(
            chunks,
            [b"a\nb\r".to_vec(), b"\nc\rd".to_vec(), b"\n".to_vec()]
        );
        assert_eq!(r.octets(), 9);
        assert_eq!(r.pop3_size(), 11);
        assert!(r.next_chunk().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sizes_agree() {
        let msg: &[u8] = b"Subject: x\n\nline\r\nlast";
        assert_eq!(pop3_size(msg).await.unwrap(), 24);
        assert_eq!(pop3_size_blocking(msg).unwrap(), 24);
        assert_eq!(pop3_size(&b""[..]).await.unwrap(), 0);
    }
}
