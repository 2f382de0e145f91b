//! Client-supplied text made safe for a log line.

/// At most this many characters of a client-supplied name are logged.
pub const MAX_LOGGED: usize = 64;

/// A client-supplied account name for the log: printable ASCII as it is
/// (`\` doubled), every other character escaped (`\n`, `\t`, `\r`, `\0`,
/// `\x1b`, `\u{202e}`), cut after [`MAX_LOGGED`] characters of output with
/// `...(N chars)` telling the length that was sent. What a client typed in
/// the user field can neither forge a log line, hide from a terminal, nor
/// fill the disk.
pub fn account(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_LOGGED) + 16);
    for c in name.chars() {
        let escaped = match c {
            '\\' => "\\\\".to_string(),
            ' '..='~' => c.to_string(),
            '\n' => "\\n".into(),
            '\r' => "\\r".into(),
            '\t' => "\\t".into(),
            '\0' => "\\0".into(),
            c if (c as u32) < 0x80 => format!("\\x{:02x}", c as u32),
            c => format!("\\u{{{:x}}}", c as u32),
        };
        if out.len() + escaped.len() > MAX_LOGGED {
            out.push_str(&format!("...({} chars)", name.chars().count()));
            return out;
        }
        out.push_str(&escaped);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names_are_kept() {
        assert_eq!(account("bob@acme.example"), "bob@acme.example");
        assert_eq!(account("a b\"c"), "a b\"c");
        assert_eq!(account(""), "");
    }

    #[test]
    fn control_and_non_ascii_characters_are_escaped() {
        assert_eq!(account("bob\r\nINFO fake line"), "bob\\r\\nINFO fake line");
        assert_eq!(account("a\x1b[31mb"), "a\\x1b[31mb");
        assert_eq!(account("x\0\t\x7f"), "x\\0\\t\\x7f");
        assert_eq!(account("j\u{fc}rg\u{202e}"), "j\\u{fc}rg\\u{202e}");
        assert_eq!(account("a\\nb"), "a\\\\nb", "a backslash is doubled");
    }

    #[test]
    fn long_names_are_cut_and_their_length_told() {
        let long = "x".repeat(1000);
        let logged = account(&long);
        assert_eq!(logged, format!("{}...(1000 chars)", "x".repeat(64)));
        assert_eq!(account(&"y".repeat(64)), "y".repeat(64), "64 fit");
        // Escapes count in the bound: the output stays short.
        let nasty = "\u{10ffff}".repeat(100);
        let logged = account(&nasty);
        assert!(logged.len() <= MAX_LOGGED + 16, "{logged}");
        assert!(logged.ends_with("...(100 chars)"), "{logged}");
        assert!(logged.is_ascii());
    }
}
