//! The maildrops pop3-canned serves: read once at start, and kept as the
//! bytes of the replies.

use std::fmt::Write;
use std::path::Path;

use pop3_proto::crlf::pop3_size;
use pop3_proto::encode::MessageEncoder;

/// One message: its size, UIDL, and the whole RETR reply.
pub struct Message {
    pub size: u64,
    pub uidl: String,
    /// `+OK <size> octets`, the dot-stuffed CRLF body and `.`, as sent.
    pub retr: Box<[u8]>,
}

/// A maildrop and its multi-line replies, ready to send.
pub struct Maildrop {
    pub messages: Vec<Message>,
    /// The reply to PASS.
    pub login: Box<[u8]>,
    pub stat: Box<[u8]>,
    pub list: Box<[u8]>,
    pub uidl: Box<[u8]>,
}

impl Maildrop {
    /// Reads the regular files of `dir`'s cur/ and new/, in name order.
    pub fn read(dir: &Path) -> Result<Maildrop, String> {
        let mut files = Vec::new();
        for sub in ["cur", "new"] {
            let path = dir.join(sub);
            let entries = match std::fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            };
            for entry in entries {
                let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
                let kind = entry
                    .file_type()
                    .map_err(|e| format!("{}: {e}", entry.path().display()))?;
                if kind.is_file() && !entry.file_name().to_string_lossy().starts_with('.') {
                    files.push(entry.path());
                }
            }
        }
        files.sort();
        let mut stored = Vec::with_capacity(files.len());
        for f in &files {
            stored.push(std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?);
        }
        if stored.is_empty() {
            return Err(format!("{}: no messages in cur/ or new/", dir.display()));
        }
        Ok(Maildrop::new(&stored))
    }

    /// The maildrop of these stored messages (any line endings).
    pub fn new(stored: &[Vec<u8>]) -> Maildrop {
        let messages: Vec<Message> = stored
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let size = pop3_size(data);
                let mut retr = format!("+OK {size} octets\r\n").into_bytes();
                let mut encoder = MessageEncoder::retr();
                encoder.feed(data, &mut retr);
                encoder.finish(&mut retr);
                Message {
                    size,
                    // As Dovecot's %08Xu%08Xv: UID, then UIDVALIDITY.
                    uidl: format!("{:08X}{:08X}", i + 1, 1_700_000_000u32),
                    retr: retr.into_boxed_slice(),
                }
            })
            .collect();
        let octets: u64 = messages.iter().map(|m| m.size).sum();
        let n = messages.len();
        let mut list = format!("+OK {n} messages ({octets} octets)\r\n");
        let mut uidl = String::from("+OK\r\n");
        for (i, m) in messages.iter().enumerate() {
            let _ = write!(list, "{} {}\r\n", i + 1, m.size);
            let _ = write!(uidl, "{} {}\r\n", i + 1, m.uidl);
        }
        list.push_str(".\r\n");
        uidl.push_str(".\r\n");
        Maildrop {
            login: format!("+OK Logged in, {n} messages ({octets} octets).\r\n")
                .into_bytes()
                .into(),
            stat: format!("+OK {n} {octets}\r\n").into_bytes().into(),
            list: list.into_bytes().into(),
            uidl: uidl.into_bytes().into(),
            messages,
        }
    }

    pub fn octets(&self) -> u64 {
        self.messages.iter().map(|m| m.size).sum()
    }
}

/// The maildrops, by login prefix.
#[derive(Default)]
pub struct Drops {
    by_prefix: Vec<(String, Maildrop)>,
    default: Option<Maildrop>,
}

impl Drops {
    /// Adds a maildrop for logins starting with `prefix` (`None`: all others).
    pub fn add(&mut self, prefix: Option<String>, drop: Maildrop) {
        match prefix {
            Some(p) => self.by_prefix.push((p, drop)),
            None => self.default = Some(drop),
        }
    }

    /// The maildrop of a login: the first whose prefix it starts with, else
    /// the default.
    pub fn for_login(&self, login: &[u8]) -> Option<&Maildrop> {
        self.by_prefix
            .iter()
            .find(|(p, _)| login.starts_with(p.as_bytes()))
            .map(|(_, d)| d)
            .or(self.default.as_ref())
    }

    /// What is served, for the start-up line.
    pub fn summary(&self) -> String {
        let one = |d: &Maildrop| format!("{} messages, {} octets", d.messages.len(), d.octets());
        let mut parts: Vec<String> = self
            .by_prefix
            .iter()
            .map(|(p, d)| format!("{p}*: {}", one(d)))
            .collect();
        if let Some(d) = &self.default {
            parts.push(format!("others: {}", one(d)));
        }
        parts.join("; ")
    }
}
