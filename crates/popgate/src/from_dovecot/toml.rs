//! Writing TOML by hand: a few tables, inline tables and comments.

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// TOML text, line by line.
#[derive(Default)]
pub struct Toml {
    text: String,
}

impl Toml {
    pub fn comment(&mut self, text: &str) {
        for line in text.lines().chain(text.is_empty().then_some("")) {
            self.text.push('#');
            if !line.is_empty() {
                self.text.push(' ');
                self.text.push_str(line);
            }
            self.text.push('\n');
        }
    }

    pub fn blank(&mut self) {
        self.text.push('\n');
    }

    pub fn table(&mut self, name: &str) {
        self.text.push_str(&format!("[{name}]\n"));
    }

    pub fn array_table(&mut self, name: &str) {
        self.text.push_str(&format!("[[{name}]]\n"));
    }

    /// `key = value`, the value already TOML.
    pub fn kv(&mut self, key: &str, value: &str) {
        self.text.push_str(&format!("{key} = {value}\n"));
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quote("x\u{1}"), "\"x\\u0001\"");
    }
}
