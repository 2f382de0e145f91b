//! The `MailStore` seam: what the POP3 front end needs from a mail store,
//! and nothing about POP3 sessions.
//!
//! A session asks the store to [`MailStore::open`] the maildrop of one
//! mailbox. The returned [`Maildrop`] is a snapshot taken once (message
//! number → key, UIDL, size) that stays fixed for the session. Messages are
//! streamed with [`Maildrop::fetch`] and removed with [`Maildrop::expunge`],
//! which carries the fencing token of the session's mailbox lock so that a
//! store that can refuses a commit from a session whose lock has expired.

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::AsyncRead;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod memory;
mod read;
mod template;

pub use memory::{MemoryDrop, MemoryStore};
pub use read::{CountingReader, pop3_size, pop3_size_blocking};
pub use template::{template_names_domain, template_names_user, validate_template};

/// A byte stream of one stored message, as stored (line endings untouched).
pub type MessageStream = Pin<Box<dyn AsyncRead + Send>>;

/// Which mailbox: the tenant and the canonical login that owns it.
///
/// `local` and `domain` have been validated by the front end (no `/`, no
/// leading `.`, no control characters), so a store may put them into paths
/// and keys through its template (`%n`, `%d`, `%u`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MailboxId {
    pub tenant: String,
    pub local: String,
    pub domain: String,
    /// Where the directory says this user's mail is (Dovecot's userdb
    /// `mail`), as the directory gave it; `None`: where the store's own
    /// template puts the login. Set only by [`MailStore::with_location`],
    /// which checks it; a store that has no use for it leaves it `None`.
    pub location: Option<String>,
}

impl MailboxId {
    pub fn new(
        tenant: impl Into<String>,
        local: impl Into<String>,
        domain: impl Into<String>,
    ) -> Self {
        MailboxId {
            tenant: tenant.into(),
            local: local.into(),
            domain: domain.into(),
            location: None,
        }
    }

    /// `local@domain`, or `local` when the login has no domain.
    pub fn login(&self) -> String {
        if self.domain.is_empty() {
            self.local.clone()
        } else {
            format!("{}@{}", self.local, self.domain)
        }
    }

    /// Expands a Dovecot-style template: `%n` local part, `%d` domain,
    /// `%u` whole login, `%%` a literal percent sign, with Dovecot's `L`/`U`
    /// and width modifiers (`%Ln`, `%1Ln`; see [`validate_template`]).
    pub fn expand(&self, template: &str) -> String {
        template::expand(self, template)
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.login())
    }
}

/// One message of a maildrop snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageInfo {
    /// The unique-id listing: 1-70 characters in 0x21..=0x7E, stable forever.
    pub uidl: String,
    /// Octets that RETR sends: every line ending as CRLF, before dot-stuffing.
    pub size: u64,
}

/// What happened on expunge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpungeReport {
    /// Messages removed by this expunge.
    pub deleted: usize,
    /// Messages already gone (removed by someone else); not an error.
    pub already_gone: usize,
}

/// Store failures, typed by what a caller does about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying later: the backend is unreachable, busy, timed out.
    /// POP3 answers `-ERR [SYS/TEMP]`.
    #[error("temporary store failure: {0}")]
    Temporary(String),
    /// Retrying will not help: corrupt data, permission denied, bad config.
    /// POP3 answers `-ERR [SYS/PERM]`.
    #[error("permanent store failure: {0}")]
    Permanent(String),
    /// The message is no longer in the store (deleted behind our back).
    #[error("message no longer exists")]
    Gone,
    /// The expunge carried a fencing token older than one already committed:
    /// this session's lock expired and another session has owned the mailbox.
    #[error("stale fencing token {0}: the mailbox lock was lost")]
    Fenced(u64),
}

impl StoreError {
    /// A short, bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Temporary(_) => "temporary",
            StoreError::Permanent(_) => "permanent",
            StoreError::Gone => "gone",
            StoreError::Fenced(_) => "fenced",
        }
    }

    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Temporary(_) | StoreError::Fenced(_))
    }

    /// Maps an I/O error: not-found and permission problems are permanent,
    /// everything else (disk full, interrupted, timed out) temporary.
    pub fn from_io(context: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound => StoreError::Gone,
            PermissionDenied | InvalidData | InvalidInput => {
                StoreError::Permanent(format!("{context}: {e}"))
            }
            _ => StoreError::Temporary(format!("{context}: {e}")),
        }
    }
}

/// A mail store serving many mailboxes.
#[async_trait]
pub trait MailStore: Send + Sync {
    /// A short name for logs and metrics: `maildir`, `postgres`, `s3`.
    fn backend(&self) -> &'static str;

    /// Takes the snapshot of one mailbox's maildrop. A mailbox that does not
    /// exist yet is an empty maildrop, not an error.
    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError>;

    /// Appends one message (delivery). The store computes and keeps its
    /// POP3 size. Returns the new message's UIDL.
    async fn append(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
    ) -> Result<String, StoreError>;

    /// Appends one message that keeps the UIDL another store or server
    /// gave it (an import: `popgate migrate-mail`). Like [`MailStore::append`]
    /// the store computes its POP3 size, and it is listed after every
    /// message already there, but with `uidl` as its UIDL for as long as it
    /// exists. `uidl` must pass [`valid_uidl`] (else `Permanent`, nothing
    /// stored); the caller makes sure the mailbox does not list it yet (a
    /// store with a unique index refuses a repeat with `Permanent`). The
    /// default refuses: a store that cannot keep a carried UIDL says so.
    async fn import(
        &self,
        mailbox: &MailboxId,
        uidl: &str,
        message: MessageStream,
    ) -> Result<(), StoreError> {
        let _ = (mailbox, uidl, message);
        Err(StoreError::Permanent(format!(
            "the {} store cannot keep a carried UIDL",
            self.backend()
        )))
    }

    /// An import of many messages into one mailbox (`popgate migrate-mail`):
    /// [`Importer::add`] is [`MailStore::import`], message after message in
    /// order, and a store may gather them into larger units of work (one
    /// transaction per batch, one index write per mailbox). What
    /// [`Importer::finish`] returned `Ok` for is stored; of the messages of
    /// an importer that failed or was dropped, each is either stored whole
    /// (listed, with its carried UIDL, after the ones before it) or not at
    /// all, never half. The default imports each message at once.
    async fn importer<'a>(
        &'a self,
        mailbox: &MailboxId,
    ) -> Result<Box<dyn Importer + 'a>, StoreError> {
        Ok(Box::new(OneByOne {
            store: self,
            mailbox: mailbox.clone(),
        }))
    }

    /// Checks that the backend is reachable (readiness).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The store's own name for the place that holds this mailbox: two
    /// logins whose mail lives in one place (domain aliases on a template
    /// without `%d`) get one name, so they share one mailbox lock and never
    /// hold two sessions on one maildrop. The default suits a store whose
    /// mailboxes are keyed by tenant and login.
    fn mailbox_key(&self, mailbox: &MailboxId) -> String {
        format!("{}/{}", mailbox.tenant, mailbox.login())
    }

    /// Applies a per-user mailbox location from the directory (Dovecot's
    /// userdb `mail`: `maildir:/var/vmail/d/u/Maildir` or a bare path).
    /// Returns the mailbox to open, or why the location is refused (not
    /// one of this store's places: outside its root, `..`, NUL, malformed);
    /// a refused location opens nothing. [`MailStore::mailbox_key`],
    /// [`MailStore::open`] and [`MailStore::append`] then follow the
    /// location. The default, for a store whose mailboxes have no path
    /// (PostgreSQL, S3), ignores it: the mailbox comes back unchanged,
    /// with `location` `None`.
    fn with_location(&self, mailbox: MailboxId, location: &str) -> Result<MailboxId, String> {
        let _ = location;
        Ok(mailbox)
    }
}

/// Messages imported into one mailbox, in order: see [`MailStore::importer`].
#[async_trait]
pub trait Importer: Send {
    /// Imports one message as [`MailStore::import`] does; it may show in
    /// the mailbox only once the store's current unit of work is done
    /// (at the latest at [`Importer::finish`]).
    async fn add(&mut self, uidl: &str, message: MessageStream) -> Result<(), StoreError>;

    /// Stores everything added so far for good.
    async fn finish(self: Box<Self>) -> Result<(), StoreError>;
}

/// The default [`Importer`]: [`MailStore::import`], one message at a time.
struct OneByOne<'a, S: ?Sized> {
    store: &'a S,
    mailbox: MailboxId,
}

#[async_trait]
impl<S: MailStore + ?Sized> Importer for OneByOne<'_, S> {
    async fn add(&mut self, uidl: &str, message: MessageStream) -> Result<(), StoreError> {
        self.store.import(&self.mailbox, uidl, message).await
    }

    async fn finish(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The snapshot of one maildrop, held for a session.
#[async_trait]
pub trait Maildrop: Send + Sync {
    /// The messages, in POP3 order: message number n is `messages()[n - 1]`.
    fn messages(&self) -> &[MessageInfo];

    /// Streams message `index` (0-based) as stored. The caller may drop the
    /// stream early (TOP), so a store should not read ahead far.
    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError>;

    /// Removes the messages at these indexes (0-based). `fence` is the
    /// session lock's fencing token; a store that records fences refuses a
    /// token older than the newest it has seen with [`StoreError::Fenced`]
    /// and deletes nothing. On error, nothing must be reported deleted that
    /// still exists.
    async fn expunge(&mut self, indexes: &[usize], fence: u64)
    -> Result<ExpungeReport, StoreError>;

    /// Records that the session holding the lock with fencing token `fence`
    /// has opened this maildrop, so that an older holder's later expunge is
    /// refused with [`StoreError::Fenced`] even before this session commits
    /// anything. Refuses with `Fenced` when a newer token is recorded
    /// already (this session's lock is the stale one). The default records
    /// nothing: a store that checks fences at expunge still refuses a stale
    /// holder once a newer one has committed.
    async fn claim(&mut self, fence: u64) -> Result<(), StoreError> {
        let _ = fence;
        Ok(())
    }

    /// Whether a failed [`Maildrop::expunge`] deleted nothing at all (one
    /// transaction), so the client can be told so.
    fn expunge_is_atomic(&self) -> bool {
        false
    }
}

/// The indexes an expunge was given, sorted, without repeats, and checked
/// against the snapshot's length: what every store's `expunge` starts with.
pub fn expunge_targets(indexes: &[usize], len: usize) -> Result<Vec<usize>, StoreError> {
    let mut indexes = indexes.to_vec();
    indexes.sort_unstable();
    indexes.dedup();
    match indexes.last() {
        Some(&bad) if bad >= len => Err(no_message(bad)),
        _ => Ok(indexes),
    }
}

/// The entry of a snapshot at `index`, or the error a `fetch` of a message
/// number the session never listed gets.
pub fn message_at<T>(snapshot: &[T], index: usize) -> Result<&T, StoreError> {
    snapshot.get(index).ok_or_else(|| no_message(index))
}

fn no_message(index: usize) -> StoreError {
    StoreError::Permanent(format!("no message at index {index}"))
}

/// Checks a UIDL against RFC 1939: 1 to 70 characters in 0x21..=0x7E.
pub fn valid_uidl(uidl: &str) -> bool {
    (1..=70).contains(&uidl.len()) && uidl.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// What every store's `import` starts with: refuses a UIDL that breaks
/// RFC 1939 before anything is stored.
pub fn check_carried_uidl(uidl: &str) -> Result<(), StoreError> {
    if valid_uidl(uidl) {
        Ok(())
    } else {
        Err(StoreError::Permanent(format!(
            "carried UIDL {:?} breaks RFC 1939 (1-70 printable ASCII characters)",
            uidl.chars().take(80).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_dovecot_variables() {
        let m = MailboxId::new("acme", "bob", "acme.example");
        assert_eq!(
            m.expand("/var/mail/%d/%n/Maildir"),
            "/var/mail/acme.example/bob/Maildir"
        );
        assert_eq!(m.expand("%u/"), "bob@acme.example/");
        assert_eq!(m.expand("100%%/%x"), "100%/%x");
        assert_eq!(MailboxId::new("t", "bob", "").login(), "bob");
    }

    #[test]
    fn template_validation_names_the_variable() {
        assert!(validate_template("/m/%d/%n").is_ok());
        assert!(validate_template("/m/%q").unwrap_err().contains("%q"));
        assert!(validate_template("/m/%").is_err());
    }

    #[test]
    fn expunge_targets_are_sorted_unique_and_in_range() {
        assert_eq!(expunge_targets(&[3, 1, 3, 0], 4).unwrap(), vec![0, 1, 3]);
        assert!(expunge_targets(&[], 0).unwrap().is_empty());
        assert!(matches!(
            expunge_targets(&[0, 4], 4),
            Err(StoreError::Permanent(_))
        ));
    }

    #[test]
    fn uidl_rules() {
        assert!(valid_uidl("abc"));
        assert!(!valid_uidl(""));
        assert!(!valid_uidl("a b"));
        assert!(!valid_uidl(&"x".repeat(71)));
    }
}
