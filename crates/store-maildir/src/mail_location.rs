//! Dovecot's `mail_location` for Maildir, as popgate reads it:
//! `maildir:/var/mail/%d/%n/Maildir:CONTROL=/var/lib/dovecot/control/%d/%n`.
//!
//! - The path is a popgate path template (`%n`, `%d`, `%u`, `%Ln`, ...).
//! - `CONTROL=` is where Dovecot keeps its control files outside the
//!   Maildir: INBOX's `dovecot-uidlist` (and its lock) is in `.INBOX/`
//!   below it (`INBOX/` with `LAYOUT=fs`), as Dovecot 2.3 writes it.
//!   popgate reads and writes it there, so the UIDLs stay Dovecot's.
//!   Without it, popgate would not see that uidlist, give every message a
//!   new UID, and every "leave mail on server" client would download
//!   everything again.
//! - `INBOX=` names the INBOX Maildir when it is not the root: POP3 serves
//!   INBOX, so that path is the one popgate serves.
//! - `LAYOUT=maildir++` (the default) and `LAYOUT=fs` place INBOX's
//!   control directory, as above; other layouts are refused.
//! - `INDEX=`, `INDEXPVT=`, `UTF-8`, `VOLATILEDIR=`,
//!   `NO-NOSELECT`, `ITERINDEX`, `SUBSCRIPTIONS=` are about Dovecot's
//!   indexes and folders other than INBOX, which popgate never reads:
//!   accepted and ignored ([`MailLocation::ignored`] says why).
//! - Anything else, another mailbox format, `~` (the user's home, which
//!   popgate does not know) is refused with the reason.
//!
//! A string that does not start with `maildir:` is a plain path template.

/// A parsed `mail_location`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailLocation {
    /// The Maildir served (INBOX), a path template.
    pub path: String,
    /// The directory of INBOX's `dovecot-uidlist` when it is not the
    /// Maildir: `CONTROL=` and `.INBOX` (`INBOX` with `LAYOUT=fs`).
    pub control: Option<String>,
    /// Parameters accepted but without effect for POP3, each with why.
    pub ignored: Vec<String>,
}

/// Splits at single `:`; `::` is a literal colon, as in Dovecot.
fn split_params(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() != Some(&':') {
            out.push(String::new());
            continue;
        }
        if c == ':' {
            chars.next();
        }
        if let Some(p) = out.last_mut() {
            p.push(c);
        }
    }
    out
}

fn check_path(what: &str, path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(format!(
            "{what} is empty (Dovecot's autodetection has no equivalent: name the Maildir)"
        ));
    }
    if path.starts_with('~') || path.contains("%h") || path.contains("%{home}") {
        return Err(format!(
            "{what} {path:?} uses the user's home directory, which popgate does not know: write \
             the path out with %d/%n (e.g. /home/%Ln/Maildir)"
        ));
    }
    popgate_store::validate_template(path).map_err(|e| format!("{what}: {e}"))
}

/// Parses a `mail_location` (or a plain path template).
pub fn parse_mail_location(s: &str) -> Result<MailLocation, String> {
    let Some((format, rest)) = s
        .split_once(':')
        .filter(|(f, _)| !f.is_empty() && !f.contains('/') && !f.contains('%') && f.len() <= 8)
    else {
        check_path("the path", s)?;
        return Ok(MailLocation {
            path: s.to_owned(),
            ..MailLocation::default()
        });
    };
    if !format.eq_ignore_ascii_case("maildir") {
        return Err(format!(
            "mailbox format {format:?}: popgate serves Maildir (maildir:...) only; move the mail \
             with Dovecot's dsync to Maildir first"
        ));
    }
    let params = split_params(rest);
    let mut loc = MailLocation {
        path: params[0].clone(),
        ..MailLocation::default()
    };
    let mut inbox = None;
    let mut fs_layout = false;
    for p in &params[1..] {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        match key.to_ascii_uppercase().as_str() {
            "CONTROL" => {
                check_path("CONTROL=", value)?;
                loc.control = Some(value.to_owned());
            }
            "INBOX" => {
                check_path("INBOX=", value)?;
                inbox = Some(value.to_owned());
            }
            "INDEX" | "INDEXPVT" => loc.ignored.push(format!(
                "{key}= (Dovecot's index files; popgate keeps none)"
            )),
            "LAYOUT" => match value.to_ascii_lowercase().as_str() {
                "maildir++" => fs_layout = false,
                "fs" => fs_layout = true,
                other => {
                    return Err(format!(
                        "LAYOUT={other}: popgate knows where Dovecot keeps INBOX's uidlist with \
                         LAYOUT=maildir++ (the default) and LAYOUT=fs only"
                    ));
                }
            },
            "UTF-8" | "NO-NOSELECT" | "ITERINDEX" | "SUBSCRIPTIONS" | "DIRNAME" | "FULLDIRNAME" => {
                loc.ignored.push(format!(
                    "{key} (folders other than INBOX; POP3 serves INBOX only)"
                ))
            }
            "VOLATILEDIR" => loc
                .ignored
                .push(format!("{key}= (Dovecot's lock and cache files)")),
            "ALT" => {
                return Err("ALT= is for dbox storage, not Maildir".into());
            }
            "" => return Err("an empty parameter (a stray ':')".into()),
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (popgate knows CONTROL=, INBOX=, and ignores \
                     INDEX=, LAYOUT=, UTF-8 and the other folder and index settings)"
                ));
            }
        }
    }
    if let Some(control) = &mut loc.control {
        let root = control.trim_end_matches('/');
        *control = format!("{root}/{}", if fs_layout { "INBOX" } else { ".INBOX" });
    }
    if let Some(inbox) = inbox {
        loc.ignored.push(format!(
            "the root Maildir {:?} (INBOX= is what POP3 serves)",
            loc.path
        ));
        loc.path = inbox;
    }
    check_path("the path", &loc.path)?;
    Ok(loc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_mail_locations_parse() {
        let l = parse_mail_location("maildir:/var/mail/%d/%n/Maildir").unwrap();
        assert_eq!(l.path, "/var/mail/%d/%n/Maildir");
        assert_eq!(l.control, None);
        let l = parse_mail_location(
            "maildir:/srv/%Ld/%Ln:CONTROL=/var/lib/dovecot/control/%d/%n:INDEX=/var/lib/dovecot/index/%d/%n:LAYOUT=fs",
        )
        .unwrap();
        assert_eq!(l.path, "/srv/%Ld/%Ln");
        assert_eq!(
            l.control.as_deref(),
            Some("/var/lib/dovecot/control/%d/%n/INBOX")
        );
        assert_eq!(l.ignored.len(), 1, "{:?}", l.ignored);
        let l = parse_mail_location("maildir:/srv/%n:CONTROL=/c/%n/:LAYOUT=Maildir++").unwrap();
        assert_eq!(l.control.as_deref(), Some("/c/%n/.INBOX"));
        let l = parse_mail_location("maildir:/m/%u:INBOX=/m/%u/.INBOX").unwrap();
        assert_eq!(l.path, "/m/%u/.INBOX");
        assert_eq!(
            parse_mail_location("maildir:/m/a::b/%n").unwrap().path,
            "/m/a:b/%n"
        );
        // A plain template, as before.
        assert_eq!(parse_mail_location("/m/%d/%n").unwrap().path, "/m/%d/%n");
        assert_eq!(parse_mail_location("data/%n").unwrap().path, "data/%n");
    }

    #[test]
    fn what_popgate_cannot_serve_is_named() {
        let e = |s| parse_mail_location(s).unwrap_err();
        assert!(e("mdbox:~/mdbox").contains("mdbox"));
        assert!(e("mbox:/var/mail/%u").contains("Maildir"));
        assert!(e("maildir:~/Maildir").contains("home"));
        assert!(e("maildir:/m/%n:CONTROL=~/control").contains("CONTROL="));
        assert!(e("maildir:/m/%n:FOO=bar").contains("FOO"));
        assert!(e("maildir:/m/%n:ALT=/x").contains("dbox"));
        assert!(e("maildir:/m/%n:LAYOUT=index").contains("LAYOUT=index"));
        assert!(e("maildir:").contains("empty"));
        assert!(e("maildir:/m/%q").contains("%q"));
    }
}
