//! Where a mailbox's Maildir is, and how its directory is reached.
//!
//! The path template is split at its fixed prefix: the directories before
//! the first component that holds a `%` variable (`/var/mail` in
//! `/var/mail/%d/%n/Maildir`). The prefix is the operator's, and symlinks
//! in it are followed. Below it the directories may belong to customers,
//! so each component is opened relative to its parent with
//! `O_DIRECTORY|O_NOFOLLOW`, unless the tenant opted in to following
//! symlinks. A template without variables names one Maildir: its prefix
//! is the Maildir's parent.
//!
//! A directory may name a user's Maildir itself (Dovecot's userdb `mail`).
//! That path is confined to the same fixed prefix: it must lie below it,
//! lexically (no `..`, no NUL or control characters, absolute exactly when
//! the prefix is), and everything below the prefix is opened without
//! following symlinks even for a tenant that follows them, because the
//! directory's row, not the operator, chose that path.

use std::ffi::{OsStr, OsString};
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, PathBuf};

use popgate_store::MailboxId;

use crate::safe_fs::{DirFd, Perms};

/// A path template split at its fixed prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// The fixed prefix, as a template (only `%%` may be in it).
    prefix: String,
    /// The rest, below the prefix.
    rest: String,
}

impl Template {
    pub fn new(template: &str) -> Self {
        let b = template.as_bytes();
        let mut var_at = None;
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if b.get(i + 1) != Some(&b'%') {
                    var_at = Some(i);
                    break;
                }
                i += 1;
            }
            i += 1;
        }
        // Without variables, the last component is below the prefix.
        let end = var_at.unwrap_or_else(|| template.trim_end_matches('/').len());
        let split = template[..end].trim_end_matches(|c| c != '/').len();
        let (prefix, rest) = template.split_at(split);
        let prefix = match prefix.trim_end_matches('/') {
            "" if prefix.starts_with('/') => "/",
            p => p,
        };
        Template {
            prefix: prefix.to_owned(),
            rest: rest.to_owned(),
        }
    }

    /// Where a mailbox's Maildir is: the directory's location for the
    /// user when it gave one, else the template's. A location that is not
    /// confined to the fixed prefix gives a `Location` that opens nothing.
    pub fn locate_user(&self, mailbox: &MailboxId) -> Location {
        match &mailbox.location {
            None => self.locate(mailbox),
            Some(location) => self
                .confine(mailbox, location)
                .unwrap_or_else(|e| Location {
                    prefix: PathBuf::new(),
                    below: Vec::new(),
                    path: PathBuf::from(location.replace('\0', "\\0")),
                    refused: Some(e),
                }),
        }
    }

    /// Checks a directory's location for a user (`maildir:PATH` or a bare
    /// path, with `%n`/`%d`/`%u` expanded for the user) and splits it at
    /// the fixed prefix; the error says why it is refused.
    pub fn confine(&self, mailbox: &MailboxId, location: &str) -> Result<Location, String> {
        if location.chars().any(char::is_control) {
            return Err("it holds a NUL or control character".into());
        }
        let parsed = crate::parse_mail_location(location)?;
        if parsed.control.is_some() {
            return Err(
                "CONTROL= in a user's location: the tenant's mail_location places the control \
                 files"
                    .into(),
            );
        }
        let prefix = PathBuf::from(mailbox.expand(&self.prefix));
        let path = mailbox.expand(&parsed.path);
        let mut below = Vec::new();
        for c in path.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err("it holds a `..` component".into()),
                c => below.push(OsString::from(c)),
            }
        }
        if path.starts_with('/') != prefix.has_root() {
            return Err(format!(
                "it is not below the tenant's Maildir root {}",
                prefix.display()
            ));
        }
        let root: Vec<&OsStr> = prefix
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let inside = below.len() > root.len()
            && !prefix
                .components()
                .any(|c| matches!(c, Component::ParentDir))
            && root.iter().zip(&below).all(|(r, b)| *r == b.as_os_str());
        if !inside {
            return Err(format!(
                "it is not below the tenant's Maildir root {}",
                prefix.display()
            ));
        }
        let below = below.split_off(root.len());
        let mut full = prefix.clone();
        full.extend(&below);
        Ok(Location {
            prefix,
            below,
            path: full,
            refused: None,
        })
    }

    pub fn locate(&self, mailbox: &MailboxId) -> Location {
        let prefix = PathBuf::from(mailbox.expand(&self.prefix));
        let rest = mailbox.expand(&self.rest);
        let below: Vec<OsString> = rest
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(OsString::from)
            .collect();
        let mut path = prefix.clone();
        path.extend(&below);
        Location {
            prefix,
            below,
            path,
            refused: None,
        }
    }
}

/// One mailbox's Maildir: the fixed prefix and the components below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub prefix: PathBuf,
    pub below: Vec<OsString>,
    /// The whole path, for messages and for following symlinks.
    pub path: PathBuf,
    /// Why a directory's location for the user was refused: nothing is
    /// opened or created.
    pub refused: Option<String>,
}

impl Location {
    /// Fails when the directory's location was refused.
    fn refuse(&self) -> io::Result<()> {
        match &self.refused {
            Some(why) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("the directory's location is refused: {why}"),
            )),
            None => Ok(()),
        }
    }

    /// Opens the Maildir directory; `None` when it does not exist.
    pub fn open(&self, follow: bool) -> io::Result<Option<DirFd>> {
        self.refuse()?;
        if follow {
            return none_if_missing(DirFd::open_path(&self.path));
        }
        let Some(mut dir) = none_if_missing(DirFd::open_path(&self.prefix))? else {
            return Ok(None);
        };
        for name in &self.below {
            match none_if_missing(dir.open_dir(name, false))? {
                Some(d) => dir = d,
                None => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// Opens the Maildir directory, creating what is missing (0700, the
    /// process's own, as Dovecot creates a mail root without a template
    /// to copy from).
    pub fn create(&self, follow: bool) -> io::Result<DirFd> {
        self.refuse()?;
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        if follow {
            builder.create(&self.path)?;
            return DirFd::open_path(&self.path);
        }
        if !self.prefix.as_os_str().is_empty() {
            builder.create(&self.prefix)?;
        }
        let mut dir = DirFd::open_path(&self.prefix)?;
        for name in &self.below {
            dir = match dir.open_dir(name, false) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir_0700(&dir, name)?,
                other => other?,
            };
        }
        Ok(dir)
    }
}

impl Location {
    /// Opens the directory, creating what is missing below the fixed
    /// prefix with `perms` (a Maildir's owner and mode): for a `CONTROL=`
    /// directory, which Dovecot, running as the mail user, must be able to
    /// write as well. The prefix itself must exist.
    pub fn open_or_create_as(&self, follow: bool, perms: &Perms) -> io::Result<DirFd> {
        self.refuse()?;
        let mut dir = DirFd::open_path(&self.prefix)?;
        for name in &self.below {
            dir = dir.create_dir(name, perms, follow)?;
        }
        Ok(dir)
    }
}

fn mkdir_0700(parent: &DirFd, name: &OsStr) -> io::Result<DirFd> {
    match rustix::fs::mkdirat(parent.as_fd(), name, rustix::fs::Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => parent.open_dir(name, false),
        Err(e) => Err(e.into()),
    }
}

fn none_if_missing<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    fn split(t: &str) -> (String, String) {
        let t = Template::new(t);
        (t.prefix, t.rest)
    }

    #[test]
    fn the_fixed_prefix_ends_before_the_first_variable_component() {
        assert_eq!(
            split("/var/mail/%d/%n/Maildir"),
            ("/var/mail".into(), "%d/%n/Maildir".into())
        );
        assert_eq!(
            split("/var/mail/x%d/Maildir"),
            ("/var/mail".into(), "x%d/Maildir".into())
        );
        assert_eq!(split("/home/%n"), ("/home".into(), "%n".into()));
        assert_eq!(split("/%u/Maildir"), ("/".into(), "%u/Maildir".into()));
        assert_eq!(
            split("data/mail/%d/%n"),
            ("data/mail".into(), "%d/%n".into())
        );
        assert_eq!(split("%d/%n"), ("".into(), "%d/%n".into()));
        assert_eq!(split("/m/100%%/%n"), ("/m/100%%".into(), "%n".into()));
        // No variable: one Maildir, below its parent.
        assert_eq!(
            split("/srv/one/Maildir"),
            ("/srv/one".into(), "Maildir".into())
        );
        assert_eq!(
            split("/srv/one/Maildir/"),
            ("/srv/one".into(), "Maildir/".into())
        );
        assert_eq!(split("/srv/100%%"), ("/srv".into(), "100%%".into()));
        assert_eq!(split("Maildir"), ("".into(), "Maildir".into()));
    }

    #[test]
    fn locations_expand_both_parts() {
        let mb = MailboxId::new("t", "bob", "a.example");
        let loc = Template::new("/m/100%%/%d/%n/Maildir/").locate(&mb);
        assert_eq!(loc.prefix, PathBuf::from("/m/100%"));
        assert_eq!(loc.below, ["a.example", "bob", "Maildir"]);
        assert_eq!(loc.path, PathBuf::from("/m/100%/a.example/bob/Maildir"));
    }

    #[test]
    fn symlinks_are_followed_in_the_prefix_only() {
        let tmp = TempDir::new();
        let real = tmp.path().join("real");
        std::fs::create_dir_all(real.join("a.example/bob/Maildir")).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("prefix")).unwrap();
        std::os::unix::fs::symlink("bob", real.join("a.example/alias")).unwrap();
        let t = Template::new(&format!("{}/prefix/%d/%n/Maildir", tmp.path().display()));
        let bob = t.locate(&MailboxId::new("t", "bob", "a.example"));
        assert!(
            bob.open(false).unwrap().is_some(),
            "a linked prefix is followed"
        );
        let alias = t.locate(&MailboxId::new("t", "alias", "a.example"));
        let e = alias.open(false).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(alias.create(false).is_err(), "nor created through");
        assert!(alias.open(true).unwrap().is_some(), "opt-in follows");
        let nobody = t.locate(&MailboxId::new("t", "carol", "a.example"));
        assert!(nobody.open(false).unwrap().is_none());
        nobody.create(false).unwrap();
        assert!(real.join("a.example/carol/Maildir").is_dir());
    }

    #[test]
    fn a_directory_location_is_confined_to_the_fixed_prefix() {
        let t = Template::new("/var/vmail/%d/%n/Maildir");
        let bob = MailboxId::new("t", "bob", "a.example");
        let ok = |l: &str| t.confine(&bob, l).unwrap();
        let loc = ok("maildir:/var/vmail/a.example/robert/Maildir");
        assert_eq!(loc.prefix, PathBuf::from("/var/vmail"));
        assert_eq!(loc.below, ["a.example", "robert", "Maildir"]);
        // Bare paths, variables and redundant separators name the same place.
        assert_eq!(ok("/var/vmail//a.example/./robert/Maildir/").path, loc.path);
        assert_eq!(
            ok("/var/vmail/%d/%n/Other").path,
            PathBuf::from("/var/vmail/a.example/bob/Other")
        );
        let refused = |l: &str| t.confine(&bob, l).unwrap_err();
        assert!(refused("/var/vmail/a.example/../../../etc").contains(".."));
        assert!(refused("/var/vmail/../other/bob").contains(".."));
        assert!(refused("/etc").contains("/var/vmail"));
        assert!(refused("/var/vmailx/bob").contains("/var/vmail"));
        assert!(
            refused("/var/vmail").contains("/var/vmail"),
            "the root itself"
        );
        assert!(
            refused("var/vmail/a.example/bob").contains("/var/vmail"),
            "relative"
        );
        assert!(refused("/var/vmail/a\0b").contains("NUL"));
        assert!(refused("/var/vmail/a\nb").contains("NUL"));
        assert!(refused("mbox:/var/vmail/bob").contains("Maildir"));
        assert!(refused("maildir:/var/vmail/bob:CONTROL=/c/bob").contains("CONTROL="));
        assert!(refused("").contains("empty"));
        // A refused location opens and creates nothing.
        let mut evil = bob.clone();
        evil.location = Some("/etc".into());
        let loc = t.locate_user(&evil);
        assert!(loc.refused.is_some());
        assert!(loc.open(true).is_err() && loc.create(true).is_err());
    }

    #[test]
    fn a_directory_location_never_follows_a_symlink_out() {
        let tmp = TempDir::new();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("a.example/bob/Maildir")).unwrap();
        std::fs::create_dir_all(outside.join("Maildir")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a.example/escape")).unwrap();
        let t = Template::new(&format!("{}/%d/%n/Maildir", root.display()));
        let bob = MailboxId::new("t", "bob", "a.example");
        let ok = t
            .confine(&bob, &format!("{}/a.example/bob/Maildir", root.display()))
            .unwrap();
        assert!(ok.open(false).unwrap().is_some());
        let escape = t
            .confine(
                &bob,
                &format!("{}/a.example/escape/Maildir", root.display()),
            )
            .unwrap();
        let e = escape.open(false).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(escape.create(false).is_err());
    }
}
