//! Dovecot's configuration syntax, read into a tree: `key = value` lines,
//! `name [label] { ... }` sections, `#` comments, `\` continued lines,
//! quoted values, `key = <file` (a value read from a file: kept as the
//! path, with [`Value::from_file`]), and `!include` / `!include_try` with
//! globs, relative to the including file. The same syntax serves
//! `dovecot.conf`, `doveconf -n` output and the `dovecot-sql.conf.ext` /
//! `dovecot-ldap.conf.ext` files.

use std::path::{Path, PathBuf};

/// A setting's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    /// `key = <path`: `text` is the path of a file holding the value.
    pub from_file: bool,
}

/// A section (the file itself is the root section, without a kind).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub kind: String,
    pub label: Option<String>,
    pub settings: Vec<(String, Value)>,
    pub children: Vec<Section>,
}

impl Section {
    /// The last value set for `key` in this section itself.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.settings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).map(|v| v.text.as_str())
    }

    /// The child sections of a kind (`passdb`, `service`, ...).
    pub fn sections<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.children.iter().filter(move |s| s.kind == kind)
    }

    /// The child section of a kind and label (`service pop3-login`).
    pub fn section(&self, kind: &str, label: &str) -> Option<&Section> {
        self.children
            .iter()
            .rfind(|s| s.kind == kind && s.label.as_deref() == Some(label))
    }
}

/// Reads a configuration file, following `!include`s.
pub fn read_file(path: &Path) -> Result<Section, String> {
    let mut root = Section::default();
    let mut stack = vec![root.clone()];
    read_into(path, &mut stack, 0)?;
    if stack.len() != 1 {
        return Err(format!(
            "{}: a section is not closed ('}}' missing)",
            path.display()
        ));
    }
    root = stack.pop().unwrap_or_default();
    Ok(root)
}

/// Parses configuration text (`doveconf -n` output); `!include`s are
/// relative to `base`.
pub fn parse_text(text: &str, name: &str, base: &Path) -> Result<Section, String> {
    let mut stack = vec![Section::default()];
    parse_into(text, name, base, &mut stack, 0)?;
    if stack.len() != 1 {
        return Err(format!("{name}: a section is not closed ('}}' missing)"));
    }
    Ok(stack.pop().unwrap_or_default())
}

fn read_into(path: &Path, stack: &mut Vec<Section>, depth: usize) -> Result<(), String> {
    if depth > 20 {
        return Err(format!("{}: !include nested too deep", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_into(&text, &path.display().to_string(), base, stack, depth)
}

/// Strips a `#` comment outside quotes and trims.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return line[..i].trim(),
            _ => {}
        }
    }
    line.trim()
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1]
                .replace("\\\"", "\"")
                .replace("\\\\", "\\");
        }
    }
    v.to_owned()
}

fn parse_into(
    text: &str,
    name: &str,
    base: &Path,
    stack: &mut Vec<Section>,
    depth: usize,
) -> Result<(), String> {
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let at = || format!("{name}:{}", n + 1);
        let line = strip_comment(raw);
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        let joined;
        let line = if pending.is_empty() {
            line
        } else {
            pending.push_str(line);
            joined = std::mem::take(&mut pending);
            joined.trim()
        };
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("!include_try")
            .map(|r| (r, true))
            .or_else(|| line.strip_prefix("!include").map(|r| (r, false)))
        {
            let (pattern, optional) = rest;
            let pattern = unquote(pattern);
            for file in expand_include(base, &pattern) {
                match read_into(&file, stack, depth + 1) {
                    Ok(()) => {}
                    Err(_) if optional && !file.exists() => {}
                    Err(e) => return Err(e),
                }
            }
            continue;
        }
        if line == "}" {
            if stack.len() < 2 {
                return Err(format!("{}: '}}' without a section", at()));
            }
            let done = stack.pop().unwrap_or_default();
            if let Some(parent) = stack.last_mut() {
                parent.children.push(done);
            }
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && !key.contains(char::is_whitespace) && !key.contains('{') {
                let value = value.trim();
                let value = match value.strip_prefix('<') {
                    Some(path) => Value {
                        text: unquote(path),
                        from_file: true,
                    },
                    None => Value {
                        text: unquote(value),
                        from_file: false,
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.settings.push((key.to_owned(), value));
                }
                continue;
            }
        }
        if let Some(head) = line.strip_suffix('{') {
            let mut words = head.split_whitespace();
            let Some(kind) = words.next() else {
                return Err(format!("{}: a section without a name", at()));
            };
            let label = words.next().map(unquote);
            stack.push(Section {
                kind: kind.to_owned(),
                label,
                ..Section::default()
            });
            continue;
        }
        return Err(format!("{}: cannot read {line:?}", at()));
    }
    Ok(())
}

/// The files an `!include` pattern names: one path, or a `*` glob in its
/// last component, sorted as Dovecot reads them.
fn expand_include(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let path = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
        return vec![path];
    };
    let Some((prefix, suffix)) = file.split_once('*') else {
        return vec![path];
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (name.starts_with(prefix) && name.ends_with(suffix) && name.len() >= file.len() - 1)
                .then(|| e.path())
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_settings_and_comments() {
        let text = r#"
# a comment
protocols = imap pop3 # trailing comment
mail_location = maildir:~/Maildir
ssl_cert = </etc/ssl/certs/dovecot.pem
passdb {
  driver = passwd-file
  args = scheme=CRYPT \
    username_format=%u /etc/dovecot/users
}
service pop3-login {
  inet_listener pop3 {
    port = 110
  }
  inet_listener pop3s {
    port = 995
    ssl = yes
  }
}
protocol pop3 {
  pop3_uidl_format = "%08Xu%08Xv"
}
"#;
        let root = parse_text(text, "t", Path::new("/")).unwrap();
        assert_eq!(root.text("protocols"), Some("imap pop3"));
        assert!(root.get("ssl_cert").unwrap().from_file);
        assert_eq!(root.text("ssl_cert"), Some("/etc/ssl/certs/dovecot.pem"));
        let passdb = root.sections("passdb").next().unwrap();
        assert_eq!(
            passdb.text("args"),
            Some("scheme=CRYPT  username_format=%u /etc/dovecot/users")
        );
        let login = root.section("service", "pop3-login").unwrap();
        let pop3s = login.section("inet_listener", "pop3s").unwrap();
        assert_eq!(pop3s.text("ssl"), Some("yes"));
        let pop3 = root.section("protocol", "pop3").unwrap();
        assert_eq!(pop3.text("pop3_uidl_format"), Some("%08Xu%08Xv"));
    }

    #[test]
    fn broken_files_are_named() {
        assert!(
            parse_text("a {\n", "t", Path::new("/"))
                .unwrap_err()
                .contains("not closed")
        );
        assert!(
            parse_text("}\n", "t", Path::new("/"))
                .unwrap_err()
                .contains("t:1")
        );
        assert!(parse_text("what is this\n", "t", Path::new("/")).is_err());
    }
}
