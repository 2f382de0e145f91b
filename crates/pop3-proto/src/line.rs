//! Framing: bytes from the socket → complete command lines.
//!
//! The reader never buffers more than one line's limit of a partial line.
//! A line longer than the limit is reported once as [`Line::TooLong`] and
//! the rest of it, up to its LF, is dropped as it arrives.

use std::collections::VecDeque;

use crate::crlf::find_lf;

/// The longest command line accepted, without its line ending. RFC 2449
/// allows 255 octets; clients with long SASL responses send more.
pub const MAX_LINE: usize = 1024;

/// One framed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line without its CRLF or bare LF.
    Complete(Vec<u8>),
    /// A line exceeded the limit; its bytes were discarded.
    TooLong,
}

#[derive(Debug)]
pub struct LineReader {
    max: usize,
    partial: Vec<u8>,
    /// Dropping the rest of an overlong line until its LF.
    discarding: bool,
    ready: VecDeque<Line>,
}

impl Default for LineReader {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineReader {
    pub fn new(max: usize) -> Self {
        LineReader {
            max,
            partial: Vec::new(),
            discarding: false,
            ready: VecDeque::new(),
        }
    }

    /// Feeds bytes read from the client.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let lf = find_lf(data);
            if self.discarding {
                match lf {
                    Some(i) => {
                        self.discarding = false;
                        data = &data[i + 1..];
                    }
                    None => return,
                }
                continue;
            }
            let (segment, complete) = match lf {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            // The limit counts the line without its ending; a CR before the
            // LF is part of the ending.
            let last = segment.last().or(self.partial.last());
            let allowance = self.max + usize::from(!complete || last == Some(&b'\r'));
            if self.partial.len() + segment.len() > allowance {
                self.partial.clear();
                self.ready.push_back(Line::TooLong);
                self.discarding = !complete;
            } else if complete {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(segment);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.ready.push_back(Line::Complete(line));
            } else {
                self.partial.extend_from_slice(segment);
            }
            data = match lf {
                Some(i) => &data[i + 1..],
                None => &[],
            };
        }
    }

    /// The next complete line, if one is buffered.
    pub fn next_line(&mut self) -> Option<Line> {
        self.ready.pop_front()
    }

    /// Whether complete lines are waiting (pipelined commands).
    pub fn has_line(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Drops everything buffered: after STLS, bytes sent before the TLS
    /// handshake must not be read as commands.
    pub fn clear(&mut self) {
        self.partial.clear();
        self.ready.clear();
        self.discarding = false;
    }

    /// Whether a line has started and not ended (held, or being discarded).
    pub fn mid_line(&self) -> bool {
        !self.partial.is_empty() || self.discarding
    }

    /// Gives back the memory of the (used up) queue of complete lines: an
    /// idle session holds none.
    pub fn shrink_idle(&mut self) {
        if self.ready.is_empty() && self.ready.capacity() > 0 {
            self.ready = VecDeque::new();
        }
    }

    /// Bytes held for a partial line (bounded by the limit).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(r: &mut LineReader) -> Vec<Line> {
        std::iter::from_fn(|| r.next_line()).collect()
    }

    #[test]
    fn splits_crlf_and_bare_lf() {
        let mut r = LineReader::default();
        r.push(b"STAT\r\nLIST\nNOOP");
        assert_eq!(
            lines(&mut r),
            vec![
                Line::Complete(b"STAT".to_vec()),
                Line::Complete(b"LIST".to_vec())
            ]
        );
        r.push(b"\r");
        assert!(!r.has_line());
        r.push(b"\n");
        assert_eq!(lines(&mut r), vec![Line::Complete(b"NOOP".to_vec())]);
    }

    #[test]
    fn every_split_of_a_pipeline_gives_the_same_lines() {
        let input = b"USER bob\r\nPASS a b c\r\nSTAT\nLIST 1\r\nQUIT\r\n";
        let mut whole = LineReader::default();
        whole.push(input);
        let want = lines(&mut whole);
        assert_eq!(want.len(), 5);
        for size in 1..input.len() {
            let mut r = LineReader::default();
            let mut got = Vec::new();
            for c in input.chunks(size) {
                r.push(c);
                got.extend(lines(&mut r));
            }
            assert_eq!(got, want, "chunk size {size}");
        }
    }

    #[test]
    fn overlong_line_is_reported_once_and_dropped_without_buffering() {
        let mut r = LineReader::new(16);
        r.push(b"NOOP\r\n");
        r.push(&[b'x'; 40]);
        assert!(r.buffered() <= 16);
        r.push(&[b'y'; 100_000]);
        assert_eq!(r.buffered(), 0, "the rest of an overlong line is not kept");
        r.push(b"zz\r\nSTAT\r\n");
        assert_eq!(
            lines(&mut r),
            vec![
                Line::Complete(b"NOOP".to_vec()),
                Line::TooLong,
                Line::Complete(b"STAT".to_vec())
            ]
        );
    }

    #[test]
    fn limit_is_exact() {
        let mut r = LineReader::new(4);
        r.push(b"1234\r\n12345\r\n1234\n");
        assert_eq!(
            lines(&mut r),
            vec![
                Line::Complete(b"1234".to_vec()),
                Line::TooLong,
                Line::Complete(b"1234".to_vec())
            ]
        );
        // A complete overlong line in one push does not start discarding.
        r.push(b"1234\r");
        r.push(b"\n");
        assert_eq!(lines(&mut r), vec![Line::Complete(b"1234".to_vec())]);
        r.push(b"123456789\nSTAT\n");
        assert_eq!(
            lines(&mut r),
            vec![Line::TooLong, Line::Complete(b"STAT".to_vec())]
        );
    }

    #[test]
    fn clear_drops_pipelined_bytes() {
        let mut r = LineReader::default();
        r.push(b"STLS\r\nUSER evil\r\nPA");
        assert_eq!(r.next_line(), Some(Line::Complete(b"STLS".to_vec())));
        r.clear();
        r.push(b"CAPA\r\n");
        assert_eq!(lines(&mut r), vec![Line::Complete(b"CAPA".to_vec())]);
    }
}
