//! Parsing one version of a passwd-file into its users, with a warning
//! (logged, and kept for [`PasswdFile::warnings`](crate::PasswdFile::warnings))
//! for every line that is malformed or cannot log in.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use tracing::warn;

use popgate_auth::UserInfo;
use popgate_auth::nets::AllowNets;
use popgate_auth::scheme::{self, CostLimits, SchemeError};

/// One parsed version of the file.
#[derive(Default)]
pub(crate) struct Users {
    pub(crate) map: HashMap<String, Entry>,
    /// A real entry's password of the most common cost class, checked (and
    /// the result ignored) for unknown users, so that they cost the same.
    pub(crate) dummy: Option<Box<str>>,
    /// Enabled users with a PLAIN password (the only ones APOP can check).
    pub(crate) plain: usize,
    pub(crate) skipped: usize,
    /// What the load warned about, as `file:line: user: problem`.
    pub(crate) warnings: Vec<String>,
}

pub(crate) struct Entry {
    pub(crate) stored: Box<str>,
    pub(crate) disabled: bool,
    pub(crate) info: UserInfo,
    /// `allow_nets`, when the line has it.
    pub(crate) allow_nets: Option<AllowNets>,
    /// Why the stored hash is above the cost caps; it is never verified.
    pub(crate) over_cap: Option<Box<str>>,
    /// Whether a login was refused for `over_cap` yet (it is logged once).
    pub(crate) warned: AtomicBool,
}

/// Where a load's warnings go: the log, and [`Users::warnings`].
struct Notes<'a> {
    path: &'a Path,
    list: Vec<String>,
}

impl Notes<'_> {
    fn warn(&mut self, line: usize, user: Option<&str>, problem: &str) {
        let file = self.path.display();
        match user {
            Some(user) => {
                warn!(file = %file, line, user, "passwd-file: {problem}");
                self.list.push(format!("{file}:{line}: {user}: {problem}"));
            }
            None => {
                warn!(file = %file, line, "passwd-file: {problem}");
                self.list.push(format!("{file}:{line}: {problem}"));
            }
        }
    }
}

pub(crate) fn parse(path: &Path, bytes: &[u8], limits: &CostLimits) -> Users {
    let mut users = Users::default();
    let mut notes = Notes {
        path,
        list: Vec::new(),
    };
    // Lines with popgate_max_sessions: how many, and the first.
    let mut max_sessions: (usize, usize) = (0, 0);
    // cost class -> (users, first line, first user)
    let mut classes: HashMap<String, (usize, usize, String)> = HashMap::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = index + 1;
        let parsed = std::str::from_utf8(raw)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|line| {
                parse_line(&mut notes, lineno, line.strip_suffix('\r').unwrap_or(line))
            });
        let (user, mut entry, has_max_sessions) = match parsed {
            Ok(Some(parsed)) => parsed,
            Ok(None) => continue,
            Err(reason) => {
                notes.warn(lineno, None, &format!("skipping malformed line: {reason}"));
                users.skipped += 1;
                continue;
            }
        };
        if has_max_sessions {
            if max_sessions.0 == 0 {
                max_sessions.1 = lineno;
            }
            max_sessions.0 += 1;
        }
        if users.map.contains_key(&user) {
            notes.warn(
                lineno,
                Some(&user),
                "user listed again; the first line wins",
            );
            continue;
        }
        match scheme::cost_class(&entry.stored) {
            Ok(class) => match scheme::check_cost(&entry.stored, limits) {
                Err(error @ SchemeError::AboveCap { .. }) => {
                    notes.warn(
                        lineno,
                        Some(&user),
                        &format!("{error}; this user cannot log in (the hash is never computed)"),
                    );
                    entry.over_cap = Some(error.to_string().into());
                }
                _ => {
                    if class == "PLAIN" && !entry.disabled {
                        users.plain += 1;
                    }
                    classes.entry(class).or_insert((0, lineno, user.clone())).0 += 1;
                }
            },
            Err(_) if entry.stored.is_empty() => {}
            Err(error) => {
                notes.warn(
                    lineno,
                    Some(&user),
                    &format!("{error}; this user cannot log in"),
                );
            }
        }
        users.map.insert(user, entry);
    }
    if max_sessions.0 > 0 {
        let (count, first) = max_sessions;
        notes.warn(
            first,
            None,
            &format!(
                "popgate_max_sessions is ignored: a mailbox has one session at a time ({count} line(s) have it, the first is line {first})"
            ),
        );
    }
    users.warnings = notes.list;
    // The most common class; on a tie, the one seen first.
    let best = classes
        .into_values()
        .max_by_key(|(count, line, _)| (*count, std::cmp::Reverse(*line)));
    users.dummy = best
        .and_then(|(_, _, user)| users.map.get(&user))
        .map(|entry| entry.stored.clone());
    users
}

/// One line: `Ok(None)` for blank and comment lines, `Err(reason)` for a
/// malformed one. The reason never quotes the password column. The flag
/// says whether the line has `popgate_max_sessions`.
fn parse_line(
    notes: &mut Notes<'_>,
    lineno: usize,
    line: &str,
) -> Result<Option<(String, Entry, bool)>, String> {
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let mut columns = line.splitn(8, ':');
    let user = columns.next().unwrap_or_default();
    let Some(stored) = columns.next() else {
        return Err("no password column (expected user:password[:...])".into());
    };
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("user name contains white space".into());
    }
    if user.matches('@').count() > 1 || user.starts_with('@') || user.ends_with('@') {
        return Err("user name is not local or local@domain".into());
    }
    let user = user.to_lowercase();
    let extra = columns.nth(5).unwrap_or_default();

    let mut entry = Entry {
        stored: stored.into(),
        disabled: stored.is_empty(),
        info: UserInfo::default(),
        allow_nets: None,
        over_cap: None,
        warned: AtomicBool::new(false),
    };
    let mut max_sessions = false;
    for field in extra.split_whitespace() {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "nopassword" | "nologin" => entry.disabled = true,
            "allow_nets" => {
                let (nets, invalid) = AllowNets::parse(value);
                for bad in invalid {
                    notes.warn(
                        lineno,
                        Some(&user),
                        &format!("{bad}; it matches no address"),
                    );
                }
                if entry.allow_nets.is_some() {
                    notes.warn(lineno, Some(&user), "allow_nets given twice; user disabled");
                    entry.disabled = true;
                }
                entry.allow_nets = Some(nets);
            }
            "allow_real_nets" => {
                notes.warn(
                    lineno,
                    Some(&user),
                    &format!("{key} is not supported; user disabled"),
                );
                entry.disabled = true;
            }
            // Dovecot's userdb `mail` (extra field `userdb_mail=` in a
            // passdb file, `mail=` in a userdb one): the user's Maildir,
            // confined to the tenant's root at login.
            "userdb_mail" | "mail" if !value.is_empty() => {
                entry.info.location = Some(value.to_owned());
            }
            "popgate_max_sessions" => max_sessions = true,
            "popgate_login_delay" => match value.parse::<u32>() {
                Ok(n) => entry.info.login_delay = Some(n),
                Err(_) => {
                    notes.warn(
                        lineno,
                        Some(&user),
                        &format!("ignoring {key}: not a number"),
                    );
                }
            },
            _ => {}
        }
    }
    Ok(Some((user, entry, max_sessions)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_is_of_the_most_common_class() {
        let file = "\
a:{PLAIN}x
b:$2y$04$5D.aL.fV85YiD13oXmGByuH.V3eCTJWidNypC2058qMqJQ3PXvYDu
c:{BLF-CRYPT}$2y$04$V8gd8DOmgT7U9U2NY1s91.DtqA1jv..5X/UKdKoUaqncsrt5li2k6
d:{SHA512-CRYPT}$6$salt$hash
";
        let users = parse(Path::new("t"), file.as_bytes(), &CostLimits::DEFAULT);
        assert_eq!(users.map.len(), 4);
        assert_eq!(users.plain, 1);
        assert!(
            users
                .dummy
                .as_deref()
                .is_some_and(|d| d.starts_with("$2y$04$5D"))
        );
        assert!(
            parse(Path::new("t"), b"# nobody\n", &CostLimits::DEFAULT)
                .dummy
                .is_none()
        );
    }

    #[test]
    fn userdb_mail_is_the_users_location() {
        let file = "\
a:{PLAIN}x::::/home/a::userdb_mail=maildir:/var/vmail/a/Maildir popgate_login_delay=5
b:{PLAIN}x:1000:1000::/home/b::mail=/var/vmail/b
c:{PLAIN}x
";
        let users = parse(Path::new("t"), file.as_bytes(), &CostLimits::DEFAULT);
        let location = |u: &str| users.map[u].info.location.clone();
        assert_eq!(
            location("a").as_deref(),
            Some("maildir:/var/vmail/a/Maildir")
        );
        assert_eq!(users.map["a"].info.login_delay, Some(5));
        assert_eq!(location("b").as_deref(), Some("/var/vmail/b"));
        assert_eq!(location("c"), None);
    }
}
