//! Everything PostgreSQL: the store (mailboxes, messages and their bodies
//! in a database), the directory ([`PgDirectory`], users in the same
//! database), their schema and the pools they share.
//!
//! - Schema: the sqlx migrations in this crate's `migrations/` (embedded
//!   here as [`MIGRATOR`]), applied by
//!   `popgate migrate` into one schema (`search_path`), `popgate` by default.
//!   Tenants share the tables: a mailbox is the row `(tenant, login)`.
//! - A message has a per-mailbox UID (from the mailbox row's `next_uid`,
//!   never reused), a stored UIDL (Dovecot's `%08Xu%08Xv` of UID and the
//!   mailbox's UID validity, or whatever an import wrote), its POP3 size
//!   (computed once, at delivery) and its body in `message_chunks` rows of
//!   at most [`CHUNK_SIZE`] bytes. Delivery streams the input into chunks
//!   and RETR streams them back one at a time, so no message is ever whole
//!   in memory.
//! - An import (`popgate migrate-mail`) keeps the carried UIDL and writes
//!   many messages per transaction (the `import` module's batches).
//! - Opening a maildrop is one indexed query, in UID order.
//! - Expunge is one transaction, fenced: the mailbox row keeps the highest
//!   fencing token that committed; an older token changes nothing and gets
//!   [`StoreError::Fenced`].
//! - Connection trouble, timeouts and an overloaded server are
//!   [`StoreError::Temporary`] (`-ERR [SYS/TEMP]`); the pool reconnects on
//!   its own when the database is back.

pub mod directory;
mod drop;
mod import;
mod pools;
mod schema;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use popgate_store::{
    CountingReader, Importer, MailStore, MailboxId, Maildrop, MessageInfo, MessageStream,
    StoreError, check_carried_uidl,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use directory::{PgDirectory, UserAdminError, UserEntry};
pub use drop::PgDrop;
pub use pools::Pools;
pub use schema::{MIGRATOR, SchemaStatus, latest_version, migrate, schema_status};

/// The largest piece of a message body in one `message_chunks` row.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// A pooled connection idle for this long is pinged before use.
pub const PING_IDLE: Duration = Duration::from_secs(1);

/// Connection settings of a PostgreSQL store (and directory).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PgConfig {
    /// `postgres://user[:password]@host[:port]/database[?sslmode=...]`.
    pub url: String,
    /// The schema holding popgate's tables (the connections' `search_path`).
    pub schema: String,
    /// Connections the pool opens at most.
    pub max_connections: u32,
    /// Connections the pool keeps open while idle.
    pub min_connections: u32,
    /// How long an operation waits for a connection (connecting included)
    /// before it fails with a temporary error.
    pub connect_timeout: Duration,
    /// The server cancels a statement that runs longer (`statement_timeout`).
    pub statement_timeout: Duration,
    /// An idle connection above `min_connections` is closed after this long.
    pub idle_timeout: Duration,
}

impl PgConfig {
    pub const DEFAULT_SCHEMA: &str = "popgate";

    /// The defaults, for this URL.
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            schema: Self::DEFAULT_SCHEMA.into(),
            max_connections: 10,
            min_connections: 0,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
        }
    }

    /// Checks the settings; the error names the field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.connect_options().map_err(|e| ("url", e))?;
        if !valid_schema_name(&self.schema) {
            return Err((
                "schema",
                format!(
                    "{:?}: a schema name is 1-63 lower-case letters, digits and '_', not starting with a digit",
                    self.schema
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(("max_connections", "must be at least 1".into()));
        }
        if self.min_connections > self.max_connections {
            return Err(("min_connections", "must not exceed max_connections".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(("connect_timeout", "must be more than 0s".into()));
        }
        if self.statement_timeout < Duration::from_millis(1) {
            return Err(("statement_timeout", "must be at least 1ms".into()));
        }
        Ok(())
    }

    /// The URL's settings plus popgate's session settings.
    pub fn connect_options(&self) -> Result<PgConnectOptions, String> {
        let options: PgConnectOptions = self
            .url
            .parse()
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err("must start with postgres:// or postgresql://".into());
        }
        let millis = self.statement_timeout.as_millis().max(1);
        Ok(options.application_name("popgate").options([
            ("search_path", self.schema.clone()),
            ("statement_timeout", format!("{millis}ms")),
        ]))
    }

    /// Where the database is, for messages: host, port, database and
    /// schema, without the URL's credentials.
    pub fn describe(&self) -> String {
        match self.url.parse::<PgConnectOptions>() {
            Ok(o) => format!(
                "postgres://{}:{}/{} schema {}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or(o.get_username()),
                self.schema
            ),
            Err(_) => format!("(invalid URL) schema {}", self.schema),
        }
    }

    /// A pool that connects on first use: popgate starts while the database
    /// is down, and answers `[SYS/TEMP]` until it is back.
    ///
    /// A connection that sat idle for [`PING_IDLE`] or longer is pinged
    /// before it is handed out (one that fails is replaced), so a database
    /// restarted while popgate was quiet costs no request; a connection in
    /// steady use is not, which saves a round trip per statement under load.
    pub fn pool(&self) -> Result<PgPool, String> {
        let options = self.connect_options()?;
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections)
            .acquire_timeout(self.connect_timeout)
            .idle_timeout(Some(self.idle_timeout))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < PING_IDLE {
                        return Ok(true);
                    }
                    Ok::<bool, sqlx::Error>(sqlx::Connection::ping(conn).await.is_ok())
                })
            })
            .connect_lazy_with(options))
    }
}

/// A schema name popgate puts into SQL unquoted: lower case, so that
/// `search_path` and `CREATE SCHEMA` agree without quoting rules.
pub fn valid_schema_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with("pg_")
}

/// Maps a database error: connection trouble, timeouts, an overloaded or
/// restarting server are temporary; anything else (a missing table, a
/// broken constraint) is permanent.
pub fn db_error(context: &str, e: &sqlx::Error) -> StoreError {
    let temporary = match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| temporary_sqlstate(&c)),
        _ => false,
    };
    if temporary {
        StoreError::Temporary(format!("{context}: {e}"))
    } else {
        StoreError::Permanent(format!("{context}: {e}"))
    }
}

/// SQLSTATEs worth a retry: connection exceptions (08), serialization
/// failures and deadlocks (40), insufficient resources (53), operator
/// intervention (57: shutdown, statement timeout), and system errors (58).
pub fn temporary_sqlstate(code: &str) -> bool {
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// The PostgreSQL store. Cheap to clone; tenants may share one.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Set once the schema was found current; until then every operation
    /// checks (popgate may start before the database is reachable).
    schema_ok: Arc<AtomicBool>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// A store on this pool (whose connections' `search_path` names the schema).
    pub fn new(pool: PgPool) -> Self {
        PgStore {
            pool,
            schema_ok: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A store with its own pool, connecting on first use.
    pub fn connect_lazy(config: &PgConfig) -> Result<Self, String> {
        Ok(PgStore::new(config.pool()?))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A delivery (`carried` none: the mailbox's next UIDL) or an import,
    /// each its own transaction.
    async fn store_message(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
        carried: Option<&str>,
    ) -> Result<String, StoreError> {
        self.ensure_schema().await?;
        // Outside the delivery's transaction: a new mailbox row is not held
        // locked while the message streams in.
        let mailbox_id = self.mailbox_id(mailbox).await?;
        let err = |e: sqlx::Error| db_error("delivering", &e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        let (uidl, _) = write_message(&mut tx, mailbox_id, None, message, carried).await?;
        tx.commit().await.map_err(err)?;
        Ok(uidl)
    }

    /// The id of the mailbox row, made when missing.
    async fn mailbox_id(&self, mailbox: &MailboxId) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT popgate_mailbox($1, $2)")
            .bind(&mailbox.tenant)
            .bind(mailbox.login())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("finding the mailbox", &e))
    }

    /// Refuses to work on a schema that is behind this binary's migrations.
    async fn ensure_schema(&self) -> Result<(), StoreError> {
        if self.schema_ok.load(Ordering::Relaxed) {
            return Ok(());
        }
        match schema_status(&self.pool).await? {
            SchemaStatus::Current | SchemaStatus::Ahead { .. } => {
                self.schema_ok.store(true, Ordering::Relaxed);
                Ok(())
            }
            behind => Err(StoreError::Permanent(behind.to_string())),
        }
    }
}

/// Writes one message into the caller's transaction: its chunks, then its
/// `messages` row with the mailbox's next UID (the mailbox row stays locked
/// until the commit, so UIDs show in order) and the mailbox's next UIDL or
/// the `carried` one, under `message_id` (taken from the sequence when
/// `None`). Returns the UIDL and the octets stored.
async fn write_message(
    conn: &mut sqlx::PgConnection,
    mailbox_id: i64,
    message_id: Option<i64>,
    message: MessageStream,
    carried: Option<&str>,
) -> Result<(String, u64), StoreError> {
    let err = |e: sqlx::Error| db_error("delivering", &e);
    let message_id = match message_id {
        Some(id) => id,
        None => message_ids(conn, 1)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Temporary("no message id from the sequence".into()))?,
    };
    // Every chunk but the last is CHUNK_SIZE bytes.
    let mut message = CountingReader::new(message, CHUNK_SIZE);
    let mut seq: i32 = 0;
    while let Some(chunk) = message
        .next_chunk()
        .await
        .map_err(|e| StoreError::Temporary(format!("reading the message: {e}")))?
    {
        sqlx::query("INSERT INTO message_chunks (message_id, seq, data) VALUES ($1, $2, $3)")
            .bind(message_id)
            .bind(seq)
            .bind(chunk)
            .execute(&mut *conn)
            .await
            .map_err(err)?;
        seq = seq
            .checked_add(1)
            .ok_or_else(|| StoreError::Permanent("message too large".into()))?;
    }
    let size = i64::try_from(message.pop3_size()).unwrap_or(i64::MAX);
    let raw = i64::try_from(message.octets()).unwrap_or(i64::MAX);
    let uidl: String = match carried {
        None => sqlx::query_scalar("SELECT popgate_finish_delivery($1, $2, $3, $4, $5)")
            .bind(mailbox_id)
            .bind(message_id)
            .bind(size)
            .bind(raw)
            .bind(seq)
            .fetch_one(&mut *conn)
            .await
            .map_err(err)?,
        // popgate_finish_delivery with the carried UIDL.
        Some(carried) => sqlx::query_scalar(
            "WITH b AS (UPDATE mailboxes SET next_uid = next_uid + 1 WHERE id = $1 \
                        RETURNING next_uid - 1 AS uid) \
             INSERT INTO messages (id, mailbox_id, uid, uidl, size, raw_size, chunks) \
             SELECT $2, $1, b.uid, $3, $4, $5, $6 FROM b RETURNING uidl",
        )
        .bind(mailbox_id)
        .bind(message_id)
        .bind(carried)
        .bind(size)
        .bind(raw)
        .bind(seq)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("importing", &e))?,
    };
    Ok((uidl, message.octets()))
}

/// `n` fresh ids of `messages` rows, in one round trip.
async fn message_ids(conn: &mut sqlx::PgConnection, n: i32) -> Result<Vec<i64>, StoreError> {
    sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, $1)",
    )
    .bind(n)
    .fetch_all(conn)
    .await
    .map_err(|e| db_error("delivering", &e))
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    uidl: String,
    size: i64,
    chunks: i32,
}

#[async_trait]
impl MailStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        self.ensure_schema().await?;
        let login = mailbox.login();
        // Rows are taken as they arrive: the listing is never held twice.
        let mut rows = sqlx::query_as::<_, MessageRow>(
            "SELECT m.id, m.uidl, m.size, m.chunks FROM messages m \
             WHERE m.mailbox_id = (SELECT b.id FROM mailboxes b WHERE b.tenant = $1 AND b.login = $2) \
             ORDER BY m.uid",
        )
        .bind(&mailbox.tenant)
        .bind(&login)
        .fetch(&self.pool);
        let mut messages = Vec::new();
        let mut handles = Vec::new();
        while let Some(r) = rows
            .try_next()
            .await
            .map_err(|e| db_error("opening the maildrop", &e))?
        {
            messages.push(MessageInfo {
                uidl: r.uidl,
                size: u64::try_from(r.size).unwrap_or(0),
            });
            handles.push(drop::Handle {
                id: r.id,
                chunks: r.chunks,
            });
        }
        std::mem::drop(rows); // it borrows `login`
        messages.shrink_to_fit();
        handles.shrink_to_fit();
        Ok(Box::new(PgDrop::new(
            self.pool.clone(),
            mailbox.tenant.clone(),
            login,
            messages,
            handles,
        )))
    }

    async fn append(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
    ) -> Result<String, StoreError> {
        self.store_message(mailbox, message, None).await
    }

    /// The carried UIDL goes into `messages.uidl`; the row still takes the
    /// mailbox's next UID, so it is listed in import order. A UIDL the
    /// mailbox has already breaks `UNIQUE (mailbox_id, uidl)`: refused.
    async fn import(
        &self,
        mailbox: &MailboxId,
        uidl: &str,
        message: MessageStream,
    ) -> Result<(), StoreError> {
        check_carried_uidl(uidl)?;
        self.store_message(mailbox, message, Some(uidl))
            .await
            .map(|_| ())
    }

    /// Many messages per transaction: see the `import` module.
    async fn importer<'a>(
        &'a self,
        mailbox: &MailboxId,
    ) -> Result<Box<dyn Importer + 'a>, StoreError> {
        Ok(Box::new(import::PgImporter::new(
            self.clone(),
            mailbox.clone(),
        )))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| db_error("ping", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_field() {
        let ok = PgConfig::new("postgres://postgres@127.0.0.1:5432/test");
        ok.validate().unwrap();
        let mut c = ok.clone();
        c.url = "mysql://x".into();
        assert_eq!(c.validate().unwrap_err().0, "url");
        let mut c = ok.clone();
        c.schema = "Bad-Name".into();
        assert_eq!(c.validate().unwrap_err().0, "schema");
        let mut c = ok.clone();
        c.max_connections = 0;
        assert_eq!(c.validate().unwrap_err().0, "max_connections");
        let mut c = ok;
        c.connect_timeout = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().0, "connect_timeout");
    }

    #[test]
    fn schema_names() {
        assert!(valid_schema_name("popgate"));
        assert!(valid_schema_name("t_1"));
        assert!(!valid_schema_name("1t"));
        assert!(!valid_schema_name("pg_x"));
        assert!(!valid_schema_name("a\"b"));
        assert!(!valid_schema_name(""));
    }

    #[test]
    fn sqlstates() {
        assert!(temporary_sqlstate("57P01"));
        assert!(temporary_sqlstate("57014"));
        assert!(temporary_sqlstate("08006"));
        assert!(!temporary_sqlstate("42P01"));
        assert!(!temporary_sqlstate("23505"));
    }
}
