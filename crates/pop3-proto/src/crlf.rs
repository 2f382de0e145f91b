//! Line-ending rules shared by size computation and RETR/TOP.
//!
//! POP3 sends every line ending as CRLF. A message stored with bare LF
//! line endings gets a CR before each bare LF; CRLF stays as it is; a lone
//! CR not followed by LF is content and passes through. The POP3 size of a
//! message (LIST, STAT) is the length of that normalised form, without the
//! CRLF that RETR may add to end an unterminated last line.

/// Counts the CRLF-normalised length of a message fed in chunks of any size.
#[derive(Clone, Debug, Default)]
pub struct CrlfCounter {
    len: u64,
    prev_cr: bool,
}

impl CrlfCounter {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        let mut prev_cr = self.prev_cr;
        let mut start = 0;
        while let Some(pos) = find_lf(&chunk[start..]) {
            let at = start + pos;
            let before_cr = if at == 0 {
                prev_cr
            } else {
                chunk[at - 1] == b'\r'
            };
            if !before_cr {
                self.len += 1;
            }
            start = at + 1;
        }
        if let Some(&last) = chunk.last() {
            prev_cr = last == b'\r';
        }
        self.prev_cr = prev_cr;
    }

    pub fn finish(&self) -> u64 {
        self.len
    }
}

/// The size of a whole in-memory message.
pub fn pop3_size(message: &[u8]) -> u64 {
    let mut c = CrlfCounter::default();
    c.feed(message);
    c.finish()
}

/// Rewrites bare LF as CRLF, chunk by chunk.
#[derive(Clone, Debug, Default)]
pub struct CrlfNormaliser {
    prev_cr: bool,
}

impl CrlfNormaliser {
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        while let Some(pos) = find_lf(&chunk[start..]) {
            let at = start + pos;
            let before_cr = if at == 0 {
                self.prev_cr
            } else {
                chunk[at - 1] == b'\r'
            };
            out.extend_from_slice(&chunk[start..at]);
            out.extend_from_slice(if before_cr { b"\n" } else { b"\r\n" });
            start = at + 1;
        }
        out.extend_from_slice(&chunk[start..]);
        if let Some(&last) = chunk.last() {
            self.prev_cr = last == b'\r';
        }
    }
}

#[inline]
pub(crate) fn find_lf(haystack: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', haystack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalise_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut n = CrlfNormaliser::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            n.feed(c, &mut out);
        }
        out
    }

    #[test]
    fn bare_lf_becomes_crlf_and_crlf_stays() {
        assert_eq!(
            normalise_in_chunks(b"a\nb\r\nc\rd\n", 100),
            b"a\r\nb\r\nc\rd\r\n"
        );
        assert_eq!(pop3_size(b"a\nb\r\nc\rd\n"), 11);
        assert_eq!(pop3_size(b"no newline"), 10);
        assert_eq!(pop3_size(b""), 0);
    }

    #[test]
    fn cr_and_lf_split_across_chunks() {
        let input = b"line\r\nline\nline\r\n\r\n\n";
        let want = b"line\r\nline\r\nline\r\n\r\n\r\n";
        for size in 1..input.len() {
            assert_eq!(normalise_in_chunks(input, size), want, "chunk size {size}");
            let mut c = CrlfCounter::default();
            input.chunks(size).for_each(|ch| c.feed(ch));
            assert_eq!(c.finish(), want.len() as u64, "chunk size {size}");
        }
    }
}
