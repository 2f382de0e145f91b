//! The RETR/TOP body encoder: a stored message, fed in chunks of any size,
//! becomes the multi-line response body: every line ending CRLF, lines that
//! start with `.` stuffed with another `.`, an unterminated last line ended,
//! and the `.` terminator. For TOP it stops after the header and `k` body
//! lines and tells the caller it needs no more input.
//!
//! The encoder holds no message bytes between calls, only a few flags, so a
//! session's memory does not grow with the message.
//!
//! RETR copies the chunk in spans: it looks only at each LF (memchr), and
//! copies everything between the places where a CR must be inserted (a
//! bare LF) or a dot stuffed (an LF followed by `.`) in one go. A message
//! that is already CRLF with no line starting with `.` is one copy per
//! chunk. TOP, which must count lines and stop, goes line by line; the
//! property tests check that both give the same bytes.

use crate::crlf::find_lf;

#[derive(Clone, Debug)]
pub struct MessageEncoder {
    /// The next byte starts a line.
    at_line_start: bool,
    /// The last byte fed was CR (its LF may come in the next chunk).
    prev_cr: bool,
    /// Bytes in the current line so far, line ending excluded.
    line_len: u64,
    in_header: bool,
    /// For TOP: how many body lines may still be sent.
    body_lines_left: Option<u64>,
    done: bool,
}

impl MessageEncoder {
    /// For RETR: the whole message.
    pub fn retr() -> Self {
        Self::new(None)
    }

    /// For TOP n k: the header, the blank line, and `k` lines of the body.
    pub fn top(body_lines: u32) -> Self {
        Self::new(Some(u64::from(body_lines)))
    }

    fn new(body_lines_left: Option<u64>) -> Self {
        MessageEncoder {
            at_line_start: true,
            prev_cr: false,
            line_len: 0,
            in_header: true,
            body_lines_left,
            done: false,
        }
    }

    /// True once TOP has sent all it will: stop reading the message.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Encodes one chunk of the stored message, appending to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.body_lines_left.is_none() {
            self.feed_spans(chunk, out);
        } else {
            self.feed_lines(chunk, out);
        }
    }

    /// RETR: copies the chunk in spans between the bytes to add.
    fn feed_spans(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = chunk.last() else {
            return;
        };
        out.reserve(chunk.len() + 8);
        if self.at_line_start && chunk[0] == b'.' {
            out.push(b'.');
        }
        // chunk[copied..] is still to be copied.
        let mut copied = 0;
        if !has_bare_lf(chunk, self.prev_cr) {
            // Already CRLF: only the dots at line starts are added.
            for lf in memchr::memmem::find_iter(chunk, b"\n.") {
                out.extend_from_slice(&chunk[copied..=lf]);
                out.push(b'.');
                copied = lf + 1;
            }
            out.extend_from_slice(&chunk[copied..]);
            self.at_line_start = last == b'\n';
            self.prev_cr = last == b'\r';
            return;
        }
        for lf in memchr::memchr_iter(b'\n', chunk) {
            let cr_before = if lf == 0 {
                self.prev_cr
            } else {
                chunk[lf - 1] == b'\r'
            };
            if !cr_before {
                out.extend_from_slice(&chunk[copied..lf]);
                out.push(b'\r');
                copied = lf;
            }
            if chunk.get(lf + 1) == Some(&b'.') {
                out.extend_from_slice(&chunk[copied..=lf]);
                out.push(b'.');
                copied = lf + 1;
            }
        }
        out.extend_from_slice(&chunk[copied..]);
        self.at_line_start = last == b'\n';
        self.prev_cr = last == b'\r';
    }

    /// TOP: line by line, counting the lines, until it has sent enough.
    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 32 + 8);
        while !chunk.is_empty() && !self.done {
            if self.at_line_start {
                if self.body_lines_left == Some(0) && !self.in_header {
                    self.done = true;
                    return;
                }
                if chunk[0] == b'.' {
                    out.push(b'.');
                }
                self.at_line_start = false;
                self.line_len = 0;
            }
            match find_lf(chunk) {
                Some(i) => {
                    let content = &chunk[..i];
                    let cr_before = if i == 0 {
                        self.prev_cr
                    } else {
                        content[i - 1] == b'\r'
                    };
                    if cr_before {
                        out.extend_from_slice(&chunk[..=i]);
                    } else {
                        out.extend_from_slice(content);
                        out.extend_from_slice(b"\r\n");
                    }
                    let len = self.line_len + i as u64 - u64::from(cr_before);
                    self.end_line(len);
                    self.prev_cr = false;
                    chunk = &chunk[i + 1..];
                }
                None => {
                    out.extend_from_slice(chunk);
                    self.line_len += chunk.len() as u64;
                    self.prev_cr = chunk.last() == Some(&b'\r');
                    chunk = &[];
                }
            }
        }
    }

    fn end_line(&mut self, content_len: u64) {
        self.at_line_start = true;
        if self.in_header {
            if content_len == 0 {
                self.in_header = false;
            }
        } else if let Some(left) = self.body_lines_left.as_mut() {
            *left = left.saturating_sub(1);
        }
    }

    /// Ends the response: closes an unterminated last line, then `.`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            if self.prev_cr {
                // The stored message ended in a lone CR: complete its CRLF.
                out.push(b'\n');
            } else {
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b".\r\n");
        self.done = true;
    }
}

/// Whether an LF in `chunk` has no CR before it (`prev_cr`: the byte before
/// the chunk was CR). Checked in blocks without a branch per byte, so that
/// the compiler vectorises it; a message stored with LF endings stops at
/// its first block.
fn has_bare_lf(chunk: &[u8], prev_cr: bool) -> bool {
    if chunk.first() == Some(&b'\n') && !prev_cr {
        return true;
    }
    let Some(rest) = chunk.get(1..) else {
        return false;
    };
    rest.chunks(4096)
        .zip(chunk.chunks(4096))
        .any(|(bytes, before)| {
            bytes
                .iter()
                .zip(before)
                .fold(false, |bare, (&b, &a)| bare | ((b == b'\n') & (a != b'\r')))
        })
}

/// Undoes the encoding of a multi-line response body (the client's side):
/// for tests and tools. Returns `None` if the terminator is missing.
pub fn decode_multiline(body: &[u8]) -> Option<Vec<u8>> {
    let body = body.strip_suffix(b".\r\n")?;
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(enc: &mut MessageEncoder, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            enc.feed(c, &mut out);
            if enc.is_done() {
                break;
            }
        }
        enc.finish(&mut out);
        out
    }

    #[test]
    fn retr_normalises_and_stuffs() {
        let msg = b"Subject: x\n\n.hello\n..two\r\nend.\n.";
        let want = b"Subject: x\r\n\r\n..hello\r\n...two\r\nend.\r\n..\r\n.\r\n";
        for chunk in 1..=msg.len() {
            assert_eq!(
                encode(&mut MessageEncoder::retr(), msg, chunk),
                want,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn empty_message_and_unterminated_line() {
        assert_eq!(encode(&mut MessageEncoder::retr(), b"", 4), b".\r\n");
        assert_eq!(
            encode(&mut MessageEncoder::retr(), b"abc", 4),
            b"abc\r\n.\r\n"
        );
        assert_eq!(
            encode(&mut MessageEncoder::retr(), b"abc\r", 4),
            b"abc\r\n.\r\n"
        );
    }

    #[test]
    fn top_sends_header_and_k_lines() {
        let msg = b"A: 1\r\nB: 2\n\r\nl1\nl2\r\n.l3\nl4\n";
        for chunk in 1..=msg.len() {
            assert_eq!(
                encode(&mut MessageEncoder::top(0), msg, chunk),
                b"A: 1\r\nB: 2\r\n\r\n.\r\n"
            );
            assert_eq!(
                encode(&mut MessageEncoder::top(2), msg, chunk),
                b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n.\r\n"
            );
            assert_eq!(
                encode(&mut MessageEncoder::top(3), msg, chunk),
                b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n..l3\r\n.\r\n"
            );
            assert_eq!(
                encode(&mut MessageEncoder::top(100), msg, chunk),
                encode(&mut MessageEncoder::retr(), msg, chunk)
            );
        }
    }

    #[test]
    fn top_on_a_message_without_body() {
        assert_eq!(
            encode(&mut MessageEncoder::top(5), b"A: 1\nB: 2", 3),
            b"A: 1\r\nB: 2\r\n.\r\n"
        );
    }

    #[test]
    fn decode_inverts_encode() {
        let msg = b"a\r\n.b\r\n..c\r\n";
        let enc = encode(&mut MessageEncoder::retr(), msg, 2);
        assert_eq!(decode_multiline(&enc).unwrap(), msg);
    }
}
