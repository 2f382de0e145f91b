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

use std::ffi::{OsStr, OsString};
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

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
}

impl Location {
    /// Opens the Maildir directory; `None` when it does not exist.
    pub fn open(&self, follow: bool) -> io::Result<Option<DirFd>> {
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
}
