//! Responses as values, serialised in one place.

use std::fmt;

/// RFC 2449 / RFC 3206 response codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The maildrop is locked by another session.
    InUse,
    /// Logging in again too soon.
    LoginDelay,
    /// A temporary system problem: try again later.
    SysTemp,
    /// A permanent system problem.
    SysPerm,
    /// Bad credentials.
    Auth,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InUse => "IN-USE",
            Code::LoginDelay => "LOGIN-DELAY",
            Code::SysTemp => "SYS/TEMP",
            Code::SysPerm => "SYS/PERM",
            Code::Auth => "AUTH",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends `+OK text\r\n` (or `+OK\r\n` for empty text).
pub fn ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+OK");
    push_text(out, text);
}

/// Appends `-ERR [CODE] text\r\n`.
pub fn err(out: &mut Vec<u8>, code: Option<Code>, text: &str) {
    out.extend_from_slice(b"-ERR");
    if let Some(code) = code {
        out.extend_from_slice(b" [");
        out.extend_from_slice(code.as_str().as_bytes());
        out.push(b']');
    }
    push_text(out, text);
}

/// Appends a SASL continuation: `+ base64\r\n` (`+ \r\n` when empty).
pub fn continuation(out: &mut Vec<u8>, challenge: &str) {
    out.extend_from_slice(b"+ ");
    push_clean(out, challenge);
    out.extend_from_slice(b"\r\n");
}

/// Appends one line of a multi-line response, dot-stuffed.
pub fn line(out: &mut Vec<u8>, text: &str) {
    if text.starts_with('.') {
        out.push(b'.');
    }
    push_clean(out, text);
    out.extend_from_slice(b"\r\n");
}

/// Appends the terminator of a multi-line response.
pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b".\r\n");
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    if !text.is_empty() {
        out.push(b' ');
        push_clean(out, text);
    }
    out.extend_from_slice(b"\r\n");
}

/// Response text never contains CR or LF: a value echoed from a client or a
/// store cannot inject a line.
fn push_clean(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let mut out = Vec::new();
        ok(&mut out, "2 320");
        ok(&mut out, "");
        err(&mut out, None, "no such message");
        err(&mut out, Some(Code::InUse), "mailbox locked");
        continuation(&mut out, "");
        assert_eq!(
            out,
            b"+OK 2 320\r\n+OK\r\n-ERR no such message\r\n-ERR [IN-USE] mailbox locked\r\n+ \r\n"
        );
    }

    #[test]
    fn multiline_is_stuffed_and_clean() {
        let mut out = Vec::new();
        line(&mut out, "1 abc");
        line(&mut out, ".hidden");
        line(&mut out, "evil\r\n.\r\n+OK");
        end(&mut out);
        assert_eq!(out, b"1 abc\r\n..hidden\r\nevil  .  +OK\r\n.\r\n");
    }
}
