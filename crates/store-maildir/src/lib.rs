//! Maildir store, a drop-in for Dovecot's: the same Maildir can be served
//! by popgate and by Dovecot, at the same time, with the same UIDLs.
//!
//! - UIDs live in Dovecot's `dovecot-uidlist` (read and written in its
//!   version 3 format, under its `dovecot-uidlist.lock` dotlock), and UIDLs
//!   are made from them with Dovecot's `pop3_uidl_format` (default
//!   `%08Xu%08Xv`). A UIDL saved in the uidlist (`P`) wins, and the POP3
//!   order (`O`) is honoured, as Dovecot does.
//! - POP3 sizes come from `,W=` in the file name, else from the uidlist's
//!   `W`, else from reading the file once; a computed size is cached as `W`
//!   in the uidlist (as Dovecot's POP3 server does).
//! - `open` moves new/ to cur/ (`<name>:2,`), gives new files UIDs in
//!   Dovecot's order, and finds a message again by its base name when a
//!   flag change renamed it.
//! - Delivery writes tmp/, fsyncs, links into new/ as
//!   `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>,W=<pop3 size>`.
//! - A Maildir that Courier served can keep Courier's POP3 UIDLs and order
//!   (`courierpop3dsizelist`, see [`MaildirStore::with_courier_uidls`]).
//! - Expunge is fenced: the newest committed fencing token is kept in
//!   `popgate-fence` in the Maildir root, written under the uidlist lock.
//! - A customer may own his Maildir's files. Everything in it is opened
//!   relative to directory handles without following symlinks (below the
//!   template's fixed prefix, unless the tenant opts in), only regular
//!   files are read, metadata files are read up to a cap, and temporary
//!   files are created exclusively (see `safe_fs`). What popgate creates
//!   takes the Maildir directory's owner, group and mode, as with Dovecot.

mod courier;
mod dotlock;
mod fence;
mod filename;
mod files;
mod location;
mod mail_location;
mod maildir;
mod safe_fs;
mod store;
mod sync;
mod uidl_format;
mod uidlist;

#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod test_util;

pub use mail_location::{MailLocation, parse_mail_location};
pub use store::{DEFAULT_LOCK_TIMEOUT, MaildirDrop, MaildirStore};

/// Dovecot's default `pop3_uidl_format`.
pub const DEFAULT_UIDL_FORMAT: &str = "%08Xu%08Xv";

/// Configuration of a Maildir store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaildirConfig {
    /// Where a mailbox's Maildir is: `%n` local part, `%d` domain, `%u`
    /// login, e.g. `/var/mail/%d/%n/Maildir`; or a Dovecot `mail_location`
    /// (`maildir:/var/mail/%d/%n/Maildir:CONTROL=...`, see
    /// [`parse_mail_location`]).
    pub path_template: String,
    /// Dovecot's `pop3_uidl_format` (see [`validate_uidl_format`]).
    pub uidl_format: String,
}

impl Default for MaildirConfig {
    fn default() -> Self {
        MaildirConfig {
            path_template: "/var/mail/%d/%n/Maildir".into(),
            uidl_format: DEFAULT_UIDL_FORMAT.into(),
        }
    }
}

/// Checks a `pop3_uidl_format` for config loading. Accepts what Dovecot
/// accepts for Maildir, with `%u`, `%v`, `%f` (file name base), `%g`
/// (message GUID), `%%`, and Dovecot's width, offset and modifier syntax
/// (`%08Xu`). Refuses `%m` (Dovecot cannot compute it for Maildir either)
/// and formats without `%u`, `%f` or `%g`, whose UIDLs would not be unique.
pub fn validate_uidl_format(format: &str) -> Result<(), String> {
    uidl_format::UidlFormat::parse(format).map(|_| ())
}
