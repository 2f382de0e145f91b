//! `MaildirStore` and its `Maildrop`: the async face of [`crate::maildir`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use popgate_store::{
    CountingReader, ExpungeReport, MailStore, MailboxId, Maildrop, MessageInfo, MessageStream,
    StoreError, check_carried_uidl, valid_uidl,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

use crate::MaildirConfig;
use crate::filename;
use crate::files::FileList;
use crate::location::Template;
use crate::maildir::{Dir, FileRef, Maildir, Open, Snapshot, io_error};
use crate::uidl_format::{UidlFormat, UidlVars};

/// How long to wait for `dovecot-uidlist.lock` before giving up.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;

/// A Maildir store that reads and writes Maildirs exactly as Dovecot does,
/// so both can serve the same mailboxes with the same UIDLs.
#[derive(Clone, Debug)]
pub struct MaildirStore {
    template: Arc<Template>,
    /// `CONTROL=`: where `dovecot-uidlist` is, when not in the Maildir.
    control: Option<Arc<Template>>,
    uidl_format: Arc<UidlFormat>,
    lock_timeout: Duration,
    follow_symlinks: bool,
    courier_uidls: bool,
}

impl MaildirStore {
    /// Checks the configuration and builds the store.
    pub fn new(config: MaildirConfig) -> Result<Self, String> {
        let location = crate::parse_mail_location(&config.path_template)
            .map_err(|e| format!("path_template: {e}"))?;
        let uidl_format =
            UidlFormat::parse(&config.uidl_format).map_err(|e| format!("uidl_format: {e}"))?;
        Ok(MaildirStore {
            template: Arc::new(Template::new(&location.path)),
            control: location.control.map(|c| Arc::new(Template::new(&c))),
            uidl_format: Arc::new(uidl_format),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            follow_symlinks: false,
            courier_uidls: false,
        })
    }

    /// How long `open`, `append` and `expunge` wait for the uidlist lock
    /// (default 10 s). `open` then goes on without new messages; the others
    /// fail with a temporary error.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Whether symlinks are followed below the path template's fixed
    /// prefix (default: no).
    ///
    /// The fixed prefix is the part of the template before the component
    /// holding the first variable (`/var/mail` in
    /// `/var/mail/%d/%n/Maildir`); it is the operator's, and symlinks in it
    /// are always followed. Below it the directories may belong to
    /// customers, so by default each is opened without following a
    /// symlink: a Maildir, a `%d`/`%n` directory or a `cur`, `new` or `tmp`
    /// that is a symlink makes the mailbox fail to open (`[SYS/PERM]`,
    /// logged), because `cur` linked to another tenant's `cur` would serve
    /// and delete that tenant's mail. Turn this on only for a tenant whose
    /// users cannot write their Maildir's parents nor the Maildir itself
    /// (e.g. domains linked to another disk). Files inside a Maildir
    /// (messages, `dovecot-uidlist`, `popgate-fence`) are never followed.
    pub fn with_follow_symlinks(mut self, follow: bool) -> Self {
        self.follow_symlinks = follow;
        self
    }

    /// Whether the messages Courier's `courierpop3dsizelist` lists are
    /// served with the UIDLs and in the order Courier's POP3 server gave
    /// them (default: no). For Maildirs that Courier served: popgate can
    /// then serve them in its place, or `popgate migrate-mail` move them.
    pub fn with_courier_uidls(mut self, courier: bool) -> Self {
        self.courier_uidls = courier;
        self
    }

    /// The Maildir of a mailbox.
    pub fn maildir_path(&self, mailbox: &MailboxId) -> PathBuf {
        self.template.locate_user(mailbox).path
    }

    /// [`MailStore::open`] with the Maildir's own snapshot type, which also
    /// tells each message's file.
    pub async fn open_maildrop(&self, mailbox: &MailboxId) -> Result<MaildirDrop, StoreError> {
        let maildir = self.maildir(mailbox);
        let md = maildir.clone();
        let courier = self.courier_uidls;
        let (snapshot, listed) = blocking(move || match md.open()? {
            Some(open) => {
                let listed = if courier { open.courier_list()? } else { None };
                Ok((open.snapshot()?, listed))
            }
            None => Ok((Snapshot::default(), None)),
        })
        .await?;
        let mut drop = MaildirDrop::new(maildir, snapshot, &self.uidl_format);
        if let Some(listed) = listed {
            drop.apply_courier(&listed);
        }
        Ok(drop)
    }

    fn maildir(&self, mailbox: &MailboxId) -> Maildir {
        // A location from the directory is the row's choice, not the
        // operator's: below the prefix, no symlink is followed there.
        Maildir::new(
            self.template.locate_user(mailbox),
            self.control.as_ref().map(|c| c.locate(mailbox)),
            self.follow_symlinks && mailbox.location.is_none(),
            self.lock_timeout,
        )
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Temporary(format!("maildir task failed: {e}")))?
}

#[async_trait]
impl MailStore for MaildirStore {
    fn backend(&self) -> &'static str {
        "maildir"
    }

    /// The Maildir's path: two logins on one path share the lock.
    fn mailbox_key(&self, mailbox: &MailboxId) -> String {
        format!("maildir:{}", self.maildir_path(mailbox).display())
    }

    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        Ok(Box::new(self.open_maildrop(mailbox).await?))
    }

    /// Confines the location to the path template's fixed prefix (see
    /// [`MaildirStore::with_follow_symlinks`]).
    fn with_location(&self, mut mailbox: MailboxId, location: &str) -> Result<MailboxId, String> {
        self.template.confine(&mailbox, location)?;
        mailbox.location = Some(location.to_owned());
        Ok(mailbox)
    }

    async fn append(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
    ) -> Result<String, StoreError> {
        let (open, tmp_name, name) = self.write_message(mailbox, message).await?;
        let base = name.clone();
        let (uid, uid_validity) = blocking(move || {
            let failure = match open.deliver(&tmp_name, &base) {
                Ok(true) => None,
                Ok(false) => Some(StoreError::Temporary(format!("{base} exists in new/"))),
                Err(e) => Some(io_error("moving tmp/ to new/", &e)),
            };
            if let Some(e) = failure {
                let _ = open.unlink_tmp(&tmp_name);
                return Err(e);
            }
            open.assign_uid(&base).inspect_err(|_| {
                // Undo the delivery: the caller will retry, and a message
                // without a UIDL must not show up later as a duplicate.
                let _ = open.unlink_message(&FileRef::new(Dir::New, base.clone()));
            })
        })
        .await?;
        Ok(self.uidl_format.expand(&UidlVars {
            uid,
            uid_validity,
            base: &name,
            guid: None,
        }))
    }

    /// Delivered as [`MailStore::append`] does, and the carried UIDL kept
    /// as Dovecot keeps one: the uidlist's `P` field, which Dovecot and
    /// popgate both serve instead of `pop3_uidl_format`.
    async fn import(
        &self,
        mailbox: &MailboxId,
        uidl: &str,
        message: MessageStream,
    ) -> Result<(), StoreError> {
        check_carried_uidl(uidl)?;
        let (open, tmp_name, name) = self.write_message(mailbox, message).await?;
        let uidl = uidl.to_owned();
        blocking(move || {
            let done = open.deliver_carried(&tmp_name, &name, &uidl);
            if done.is_err() {
                let _ = open.unlink_tmp(&tmp_name);
            }
            done
        })
        .await
    }
}

impl MaildirStore {
    /// Streams a message into a new file in tmp/; returns the open
    /// Maildir, the tmp/ name and the name it is to have in new/.
    async fn write_message(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
    ) -> Result<(Open, String, String), StoreError> {
        let maildir = self.maildir(mailbox);
        let tmp_name = filename::generate_base();
        let name = tmp_name.clone();
        let (open, file) = blocking(move || {
            let open = maildir.create()?;
            let file = open
                .create_tmp(&name)
                .map_err(|e| io_error("creating a file in tmp/", &e))?;
            Ok((open, file))
        })
        .await?;
        let (physical, virtual_size) = match write_tmp(file, message).await {
            Ok(s) => s,
            Err(e) => {
                let _ = blocking(move || Ok(open.unlink_tmp(&tmp_name))).await;
                return Err(io_error("writing to tmp/", &e));
            }
        };
        let name = format!("{tmp_name},S={physical},W={virtual_size}");
        Ok((open, tmp_name, name))
    }
}

/// Streams a message into a new tmp/ file, fsyncs it, and returns its
/// physical and POP3 sizes.
async fn write_tmp(file: std::fs::File, message: MessageStream) -> std::io::Result<(u64, u64)> {
    let mut file = tokio::fs::File::from_std(file);
    let mut message = CountingReader::new(message, CHUNK);
    while let Some(chunk) = message.next_chunk().await? {
        file.write_all(chunk).await?;
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok((message.octets(), message.pop3_size()))
}

/// One session's snapshot of a Maildir.
pub struct MaildirDrop {
    maildir: Maildir,
    messages: Vec<MessageInfo>,
    files: FileList,
}

impl MaildirDrop {
    fn new(maildir: Maildir, snapshot: Snapshot, format: &UidlFormat) -> Self {
        let count = snapshot.entries.len();
        let name_bytes = snapshot.entries.iter().map(|e| e.file.name.len()).sum();
        let mut messages = Vec::with_capacity(count);
        let mut files = FileList::with_capacity(count, name_bytes);
        for e in snapshot.entries {
            if !files.push(&e.file) {
                warn!(file = %e.file.name, "ignoring a file whose name is too long");
                continue;
            }
            let base = e.file.base();
            let uidl = match e.saved_uidl {
                // A saved UIDL wins; an empty one means the base name.
                Some(saved) if saved.is_empty() => base.to_owned(),
                Some(saved) => saved,
                None => format.expand(&UidlVars {
                    uid: e.uid,
                    uid_validity: snapshot.uid_validity,
                    base,
                    guid: e.guid.as_deref(),
                }),
            };
            if !valid_uidl(&uidl) {
                warn!(maildir = %maildir.path().display(), uid = e.uid, uidl = %uidl, "UIDL breaks RFC 1939");
            }
            messages.push(MessageInfo { uidl, size: e.size });
        }
        MaildirDrop {
            maildir,
            messages,
            files,
        }
    }
}

impl MaildirDrop {
    /// Courier's UIDLs and order for the messages it listed; the others
    /// follow, in their order, with their own UIDLs.
    fn apply_courier(&mut self, listed: &[crate::courier::Listed]) {
        let by_base: std::collections::HashMap<&str, (usize, &str)> = listed
            .iter()
            .enumerate()
            .map(|(i, l)| (l.base.as_str(), (i, l.uidl.as_str())))
            .collect();
        let mut rows: Vec<(usize, usize, MessageInfo)> = self
            .messages
            .drain(..)
            .enumerate()
            .map(
                |(i, mut m)| match self.files.base(i).and_then(|b| by_base.get(b)) {
                    Some(&(pos, uidl)) => {
                        m.uidl = uidl.to_owned();
                        (pos, i, m)
                    }
                    None => (listed.len() + i, i, m),
                },
            )
            .collect();
        rows.sort_by_key(|r| r.0);
        let order: Vec<usize> = rows.iter().map(|r| r.1).collect();
        self.files = self.files.reordered(&order);
        self.messages.extend(rows.into_iter().map(|r| r.2));
    }

    /// The file name bases of the messages (the name without `:2,` flags),
    /// in POP3 order: message number n is `base_names()[n - 1]`.
    pub fn base_names(&self) -> Vec<&str> {
        (0..self.files.len())
            .filter_map(|i| self.files.base(i))
            .collect()
    }
}

#[async_trait]
impl Maildrop for MaildirDrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError> {
        popgate_store::message_at(&self.messages, index)?;
        let hint = self.files.get(index).ok_or(StoreError::Gone)?;
        let md = self.maildir.clone();
        // The first chunk is read in the same trip to the blocking pool as
        // the open: most mail fits in it, and then the session never waits
        // on the pool again. Memory stays one chunk, whatever the size.
        let (file, head) = blocking(move || {
            let context = || format!("reading {}", hint.name);
            let Some(open) = md.open()? else {
                return Err(StoreError::Gone);
            };
            let Some(mut file) = open
                .open_message(&hint)
                .map_err(|e| StoreError::from_io(&context(), &e))?
            else {
                return Err(StoreError::Gone);
            };
            let mut head = Vec::with_capacity(CHUNK);
            std::io::Read::read_to_end(
                &mut std::io::Read::take(std::io::Read::by_ref(&mut file), CHUNK as u64),
                &mut head,
            )
            .map_err(|e| StoreError::from_io(&context(), &e))?;
            Ok((file, head))
        })
        .await?;
        if head.len() < CHUNK {
            return Ok(Box::pin(std::io::Cursor::new(head)));
        }
        let mut file = tokio::fs::File::from_std(file);
        // Further reads go to the blocking pool in chunks no larger than this.
        file.set_max_buf_size(CHUNK);
        Ok(Box::pin(std::io::Cursor::new(head).chain(file)))
    }

    async fn expunge(
        &mut self,
        indexes: &[usize],
        fence: u64,
    ) -> Result<ExpungeReport, StoreError> {
        let indexes = popgate_store::expunge_targets(indexes, self.files.len())?;
        let targets: Vec<FileRef> = indexes.iter().filter_map(|&i| self.files.get(i)).collect();
        let md = self.maildir.clone();
        let (deleted, already_gone) = blocking(move || match md.open()? {
            Some(open) => open.expunge(&targets, fence),
            None => Ok((0, targets.len())),
        })
        .await?;
        Ok(ExpungeReport {
            deleted,
            already_gone,
        })
    }
}
