//! S3 store: serves mail that lands in a bucket, one object per message.
//!
//! An MTA, a cloud inbound-mail service or `popgate deliver` writes each
//! received message as one object (the raw RFC 5322 bytes) under the
//! mailbox's prefix (`prefix = "%d/%n/"` by default). Works against AWS S3
//! and S3-compatible servers (MinIO, Ceph, R2, s3s-fs).
//!
//! - **Snapshot.** `open` lists the prefix, every page. Keys ending in `/`
//!   (folder markers) and everything under `<prefix>.popgate/` (popgate's
//!   own objects) are not messages. Order: last-modified time, then key;
//!   the snapshot is fixed for the session.
//! - **UIDL.** Derived from the key only (see [`uidl_for`]): the key
//!   relative to the prefix when it is a valid RFC 1939 unique-id, else a
//!   hash-based form that cannot collide with a plain one.
//! - **Sizes.** `append` stores the CRLF-normalised size as object metadata
//!   `x-amz-meta-pop3-size`, counted while the message streams in. Any
//!   writer may set it. For objects without it the size is computed once by
//!   streaming the object, then kept in a per-mailbox index object
//!   (`<prefix>.popgate/sizes.json`, keyed by key and ETag) that every
//!   replica shares, so a login reads that one object, not every message.
//! - **Fetch.** A GET whose body is handed to the session as it arrives,
//!   chunk by chunk; dropping the stream (TOP) stops the download.
//! - **Expunge.** DeleteObjects in batches of at most 1000 keys; keys that
//!   fail are retried with backoff; if any still fail the expunge fails and
//!   reports nothing deleted. Fencing is best effort: see [`S3Drop`].
//! - **Failures.** Every call has connect and per-attempt timeouts and is
//!   retried with exponential backoff; an unreachable or failing S3 is a
//!   [`StoreError::Temporary`] (`-ERR [SYS/TEMP]`).

mod body;
mod delete;
mod index;
mod uidl;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedHttpClient, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use futures_util::StreamExt;
use popgate_store::{
    ExpungeReport, MailStore, MailboxId, Maildrop, MessageInfo, MessageStream, StoreError,
};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use crate::body::IdleTimeout;
use crate::delete::{BatchResult, delete_all};
use crate::index::SizeIndex;
pub use crate::uidl::uidl_for;

/// The object metadata that carries a message's POP3 size
/// (`x-amz-meta-pop3-size`).
pub const SIZE_METADATA: &str = "pop3-size";
/// popgate's own objects live under `<mailbox prefix>` + this.
pub const RESERVED_DIR: &str = ".popgate/";
const INDEX_NAME: &str = "sizes.json";
const FENCE_NAME: &str = "fence";
/// Messages up to this size are uploaded from memory; larger ones are
/// spooled to a temporary file first (their size metadata must be known
/// before the upload starts).
const IN_MEMORY_UPLOAD: usize = 8 << 20;
/// How many objects `open` reads at once when it must compute sizes: S3
/// answers a GET in tens of milliseconds, so a login that must size many
/// new objects is bound by latency, not bandwidth.
const SIZE_CONCURRENCY: usize = 16;
/// When the size comes from metadata, a body up to this size is read to
/// its end (keeps the connection reusable); a larger one is dropped.
const DRAIN_LIMIT: i64 = 256 << 10;
/// An index larger than this is ignored (and rebuilt).
const MAX_INDEX: i64 = 64 << 20;
/// Expunge checks the targets one by one (HEAD) up to this many; above,
/// it lists the prefix once.
const HEAD_CHECK_LIMIT: usize = 32;
/// Deletions that S3 refuses are retried this many times in all.
const DELETE_ATTEMPTS: u32 = 4;
const CHUNK: usize = 64 * 1024;

/// Configuration of an S3 store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Where a mailbox's objects are: `%n` local part, `%d` domain, `%u`
    /// login. Must end with `/` and contain `%n` or `%u`.
    pub prefix: String,
    /// `None`: `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// `None`: AWS S3. Else the base URL of an S3-compatible service.
    pub endpoint: Option<String>,
    /// `http(s)://endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub force_path_style: bool,
    /// Static keys; `None`: the standard AWS credential chain (environment,
    /// profile, web identity / IRSA, ECS, EC2 instance metadata).
    pub credentials: Option<StaticCredentials>,
    /// Connecting to S3.
    pub connect_timeout: Duration,
    /// One attempt of one call, up to the response headers (for an
    /// upload: sending the whole message).
    pub request_timeout: Duration,
    /// Waiting for the next piece of a message body being read.
    pub read_timeout: Duration,
    /// Attempts per call, with exponential backoff between them.
    pub max_attempts: u32,
    /// Keys per ListObjectsV2 page (1 to 1000).
    pub list_page_size: u32,
}

#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl S3Config {
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            prefix: "%d/%n/".into(),
            region: None,
            endpoint: None,
            force_path_style: false,
            credentials: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            max_attempts: 3,
            list_page_size: 1000,
        }
    }

    /// Checks the settings; on error, the field at fault and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let b = &self.bucket;
        if b.is_empty() || b.len() > 255 || !b.bytes().all(|c| c.is_ascii_graphic() && c != b'/') {
            return Err((
                "bucket",
                format!("{b:?} is not a bucket name (1-255 printable characters, no '/')"),
            ));
        }
        popgate_store::validate_template(&self.prefix).map_err(|e| ("prefix", e))?;
        if !self.prefix.contains("%n") && !self.prefix.contains("%u") {
            return Err((
                "prefix",
                "must contain %n or %u, or every user shares one mailbox".into(),
            ));
        }
        if !self.prefix.ends_with('/') {
            return Err((
                "prefix",
                "must end with '/' (or one mailbox's prefix could be the start of another's)"
                    .into(),
            ));
        }
        if self.prefix.starts_with('/') {
            return Err(("prefix", "must not start with '/'".into()));
        }
        if let Some(r) = &self.region
            && (r.is_empty() || !r.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
        {
            return Err(("region", format!("{r:?} is not a region name")));
        }
        if let Some(e) = &self.endpoint {
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .ok_or((
                    "endpoint",
                    format!("{e:?} must start with http:// or https://"),
                ))?;
            if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
                return Err(("endpoint", format!("{e:?} has no host")));
            }
        }
        if let Some(c) = &self.credentials {
            if c.access_key_id.is_empty() {
                return Err(("access_key_id", "is empty".into()));
            }
            if c.secret_access_key.is_empty() {
                return Err(("secret_access_key", "is empty".into()));
            }
        }
        for (field, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("read_timeout", self.read_timeout),
        ] {
            if d.is_zero() {
                return Err((field, "must be more than 0s".into()));
            }
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(("max_attempts", "must be 1 to 10".into()));
        }
        if !(1..=1000).contains(&self.list_page_size) {
            return Err(("list_page_size", "must be 1 to 1000".into()));
        }
        Ok(())
    }

    fn region_name(&self) -> String {
        self.region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
            .or_else(|| {
                std::env::var("AWS_DEFAULT_REGION")
                    .ok()
                    .filter(|r| !r.is_empty())
            })
            .unwrap_or_else(|| "us-east-1".into())
    }
}

/// A mail store on S3. Cheap to clone.
#[derive(Clone, Debug)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    bucket: String,
    prefix: String,
    read_timeout: Duration,
    page_size: i32,
    retry_backoff: Duration,
}

/// hyper 1 with rustls and ring: the one TLS stack of the workspace.
fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

impl S3Store {
    /// Checks the configuration and builds the client. Connects to nothing
    /// yet (the first call does), so it needs no runtime.
    pub fn new(config: S3Config) -> Result<Self, String> {
        config
            .validate()
            .map_err(|(field, e)| format!("{field}: {e}"))?;
        let http = http_client();
        let region = Region::new(config.region_name());
        let backoff = Duration::from_millis(200);
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(http.clone())
            .force_path_style(config.force_path_style)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .read_timeout(config.request_timeout)
                    .operation_attempt_timeout(config.request_timeout)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts)
                    .with_initial_backoff(backoff)
                    .with_max_backoff(Duration::from_secs(5)),
            )
            // A download is watched by IdleTimeout, which counts only time
            // spent waiting for S3, not time a slow POP3 client takes.
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .upload_enabled(true)
                    .download_enabled(false)
                    .grace_period(config.read_timeout)
                    .build(),
            )
            // Checksums only where S3 requires them: S3-compatible servers
            // differ in what else they accept.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        builder = match &config.credentials {
            Some(c) => builder.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                None,
                None,
                "popgate-config",
            )),
            None => builder.credentials_provider(chain::LazyDefaultChain::new(region, http)),
        };
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.trim_end_matches('/'));
        }
        Ok(S3Store {
            inner: Arc::new(Inner {
                client: Client::from_conf(builder.build()),
                bucket: config.bucket,
                prefix: config.prefix,
                read_timeout: config.read_timeout,
                page_size: config.list_page_size as i32,
                retry_backoff: backoff,
            }),
        })
    }

    /// The key prefix of a mailbox.
    pub fn mailbox_prefix(&self, mailbox: &MailboxId) -> String {
        mailbox.expand(&self.inner.prefix)
    }
}

mod chain {
    //! The standard AWS credential chain, built on first use (building it
    //! is async, and the store is built before the runtime serves).

    use aws_config::default_provider::credentials::DefaultCredentialsChain;
    use aws_config::provider_config::ProviderConfig;
    use aws_credential_types::provider::future;
    use aws_sdk_s3::config::Credentials;
    use aws_sdk_s3::config::{ProvideCredentials, Region, SharedHttpClient};

    #[derive(Debug)]
    pub struct LazyDefaultChain {
        region: Region,
        http: SharedHttpClient,
        chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
    }

    impl LazyDefaultChain {
        pub fn new(region: Region, http: SharedHttpClient) -> Self {
            LazyDefaultChain {
                region,
                http,
                chain: tokio::sync::OnceCell::new(),
            }
        }
    }

    impl ProvideCredentials for LazyDefaultChain {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::new(async move {
                let chain = self
                    .chain
                    .get_or_init(|| async {
                        let conf = ProviderConfig::without_region()
                            .with_region(Some(self.region.clone()))
                            .with_http_client(self.http.clone());
                        DefaultCredentialsChain::builder()
                            .region(self.region.clone())
                            .configure(conf)
                            .build()
                            .await
                    })
                    .await;
                chain.provide_credentials().await
            })
        }

        fn fallback_on_interrupt(&self) -> Option<Credentials> {
            self.chain.get().and_then(|c| c.fallback_on_interrupt())
        }
    }
}

/// Maps an SDK error: unreachable, timed out, throttled or 5xx is
/// temporary; a missing object (404, or 412 for a replaced one) is
/// [`StoreError::Gone`]; a missing bucket, denied access or a bad request
/// is permanent.
fn classify<E>(what: &str, e: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e
        .as_service_error()
        .and_then(|se| se.code())
        .unwrap_or("")
        .to_owned();
    let text = format!("{what}: {}", DisplayErrorContext(&e));
    match &e {
        SdkError::ServiceError(_) => match (status.unwrap_or(0), code.as_str()) {
            (_, "NoSuchBucket") => StoreError::Permanent(text),
            (404, _) | (_, "NoSuchKey") | (412, _) => StoreError::Gone,
            (408 | 429 | 500..=599, _) => StoreError::Temporary(text),
            (_, "RequestTimeout" | "SlowDown" | "RequestTimeTooSkewed" | "Throttling") => {
                StoreError::Temporary(text)
            }
            _ => StoreError::Permanent(text),
        },
        SdkError::ConstructionFailure(_) => StoreError::Permanent(text),
        // Timeouts, connection failures, broken responses.
        _ => StoreError::Temporary(text),
    }
}

fn io_temporary(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Temporary(format!("{what}: {e}"))
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Object {
    key: String,
    /// The key relative to the mailbox prefix.
    rel: String,
    etag: Option<String>,
    /// What identifies this content of the key: its ETag, or (for servers
    /// that list none) its size and modification time.
    version: String,
    /// Stored octets.
    stored: u64,
    modified: (i64, u32),
}

impl Inner {
    /// Every message object under `prefix`, all pages, in POP3 order.
    async fn list(&self, prefix: &str) -> Result<Vec<Object>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0u32;
        let started = std::time::Instant::now();
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_keys(self.page_size)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify("listing the mailbox", e))?;
            pages += 1;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let Some(rel) = key.strip_prefix(prefix) else {
                    continue;
                };
                if rel.is_empty() || key.ends_with('/') || rel.starts_with(RESERVED_DIR) {
                    continue;
                }
                let stored = o.size().unwrap_or(0).max(0) as u64;
                let modified = o
                    .last_modified()
                    .map(|t| (t.secs(), t.subsec_nanos()))
                    .unwrap_or((0, 0));
                let etag = o.e_tag().filter(|t| !t.is_empty()).map(str::to_owned);
                let version = etag
                    .clone()
                    .unwrap_or_else(|| format!("s{stored}-t{}.{:09}", modified.0, modified.1));
                out.push(Object {
                    key: key.to_owned(),
                    rel: rel.to_owned(),
                    etag,
                    version,
                    stored,
                    modified,
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) && !t.is_empty() => {
                    token = Some(t.to_owned())
                }
                _ => break,
            }
        }
        debug!(
            prefix,
            objects = out.len(),
            pages,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "listed mailbox"
        );
        out.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.key.cmp(&b.key)));
        Ok(out)
    }

    fn reserved_key(prefix: &str, name: &str) -> String {
        format!("{prefix}{RESERVED_DIR}{name}")
    }

    /// Reads a small object of popgate's own; `None` if there is none.
    async fn get_small(&self, key: &str, limit: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return match classify(&format!("reading {key}"), e) {
                    StoreError::Gone => Ok(None),
                    other => Err(other),
                };
            }
        };
        if resp.content_length().unwrap_or(0) > limit {
            warn!(key, "ignoring an oversized object");
            return Ok(None);
        }
        let bytes = resp
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Temporary(format!("reading {key}: {e}")))?;
        Ok(Some(bytes.to_vec()))
    }

    async fn put_small(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify(&format!("writing {key}"), e))?;
        Ok(())
    }

    async fn load_index(&self, prefix: &str) -> Result<Option<SizeIndex>, StoreError> {
        let key = Self::reserved_key(prefix, INDEX_NAME);
        Ok(match self.get_small(&key, MAX_INDEX).await? {
            None => None,
            Some(bytes) => {
                let parsed = SizeIndex::parse(&bytes);
                if parsed.is_none() {
                    warn!(key, "ignoring a broken size index; it will be rebuilt");
                }
                parsed
            }
        })
    }

    /// Gets a listed object, only while it has the content it was listed
    /// with: a key rewritten with other content is another message.
    async fn get(
        &self,
        o: &Object,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(&o.key);
        if let Some(etag) = &o.etag {
            req = req.if_match(etag);
        }
        req.send()
            .await
            .map_err(|e| classify(&format!("reading {}", o.key), e))
    }

    /// The POP3 size of one object: from its metadata, else by reading it.
    async fn compute_size(&self, o: &Object) -> Result<u64, StoreError> {
        let resp = self.get(o).await?;
        let from_metadata = resp.metadata().and_then(|m| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(SIZE_METADATA))
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        });
        if let Some(size) = from_metadata {
            if resp.content_length().unwrap_or(i64::MAX) <= DRAIN_LIMIT {
                // Read the rest so the connection goes back to the pool.
                let _ = resp.body.collect().await;
            }
            return Ok(size);
        }
        let body = IdleTimeout::new(Box::pin(resp.body.into_async_read()), self.read_timeout);
        popgate_store::pop3_size(body)
            .await
            .map_err(|e| io_temporary(&format!("reading {}", o.key), e))
    }

    /// Refuses `fence` if the mailbox's fence object holds a newer token;
    /// else records `fence` there (when it is newer) so older sessions are
    /// refused from now on. Check and record are two calls: best effort.
    async fn check_fence(&self, prefix: &str, fence: u64) -> Result<(), StoreError> {
        let key = Self::reserved_key(prefix, FENCE_NAME);
        let current = match self.get_small(&key, 1024).await? {
            None => 0,
            Some(bytes) => match std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(n) => n,
                None => {
                    warn!(key, "ignoring a corrupt fence object");
                    0
                }
            },
        };
        if fence < current {
            info!(
                prefix,
                fence, current, "refusing expunge with a stale fence"
            );
            return Err(StoreError::Fenced(fence));
        }
        if fence > current {
            self.put_small(&key, format!("{fence}\n").into_bytes(), "text/plain")
                .await?;
        }
        Ok(())
    }

    /// Which of these objects still exist with the content the session saw.
    async fn still_present(
        &self,
        prefix: &str,
        targets: &[Object],
    ) -> Result<Vec<Object>, StoreError> {
        if targets.len() > HEAD_CHECK_LIMIT {
            let listed: std::collections::HashMap<String, String> = self
                .list(prefix)
                .await?
                .into_iter()
                .map(|o| (o.key, o.version))
                .collect();
            return Ok(targets
                .iter()
                .filter(|t| listed.get(&t.key) == Some(&t.version))
                .cloned()
                .collect());
        }
        let checks = futures_util::stream::iter(targets.iter().cloned())
            .map(|t| async move {
                let head = self
                    .client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(&t.key)
                    .send()
                    .await;
                match head {
                    Ok(h) => {
                        let same = match (&t.etag, h.e_tag()) {
                            (Some(a), Some(b)) => a == b,
                            _ => true,
                        };
                        Ok(same.then_some(t))
                    }
                    Err(e) => match classify(&format!("checking {}", t.key), e) {
                        StoreError::Gone => Ok(None),
                        other => Err(other),
                    },
                }
            })
            .buffer_unordered(SIZE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for c in checks {
            if let Some(t) = c? {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// One DeleteObjects call.
    async fn delete_batch(&self, keys: Vec<String>) -> Result<BatchResult, StoreError> {
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Permanent(format!("building a delete request: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(false)
            .build()
            .map_err(|e| StoreError::Permanent(format!("building a delete request: {e}")))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| classify("deleting messages", e))?;
        Ok(BatchResult {
            deleted: out
                .deleted()
                .iter()
                .filter_map(|d| d.key().map(str::to_owned))
                .collect(),
            failed: out
                .errors()
                .iter()
                .filter_map(|e| {
                    e.key().map(|k| {
                        (
                            k.to_owned(),
                            format!(
                                "{}: {}",
                                e.code().unwrap_or("error"),
                                e.message().unwrap_or("")
                            ),
                        )
                    })
                })
                .collect(),
        })
    }
}

/// A fresh object name: microseconds since the epoch (so names sort in
/// delivery order when S3's modification times tie) and 64 random bits.
fn new_object_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Without the OS's randomness, the process id and the clock still keep
    // names apart (and a name is a UIDL: it must never be reused).
    let random = getrandom::u64()
        .unwrap_or_else(|_| (u64::from(std::process::id()) << 32) ^ u64::from(now.subsec_nanos()));
    format!("{}.{:06}.{random:016x}", now.as_secs(), now.subsec_micros())
}

#[async_trait]
impl MailStore for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
    }

    /// The bucket and the mailbox's prefix: two logins on one prefix share
    /// the lock.
    fn mailbox_key(&self, mailbox: &MailboxId) -> String {
        format!("s3:{}/{}", self.inner.bucket, self.mailbox_prefix(mailbox))
    }

    async fn open(&self, mailbox: &MailboxId) -> Result<Box<dyn Maildrop>, StoreError> {
        let inner = &self.inner;
        let prefix = self.mailbox_prefix(mailbox);
        let mut objects = inner.list(&prefix).await?;
        let started = std::time::Instant::now();
        let stored_index = inner.load_index(&prefix).await?;
        debug!(
            prefix,
            entries = stored_index.as_ref().map_or(0, SizeIndex::len),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded size index"
        );
        let had_index = stored_index.is_some();
        let mut index = stored_index.unwrap_or_else(SizeIndex::new);

        let mut sizes: Vec<Option<u64>> = objects
            .iter()
            .map(|o| index.get(&o.rel, &o.version))
            .collect();
        let missing: Vec<usize> = (0..objects.len()).filter(|&i| sizes[i].is_none()).collect();
        let mut changed = false;
        let mut gone = HashSet::new();
        if !missing.is_empty() {
            let started = std::time::Instant::now();
            let results = futures_util::stream::iter(missing.iter().copied())
                .map(|i| {
                    let o = &objects[i];
                    async move { (i, inner.compute_size(o).await) }
                })
                .buffer_unordered(SIZE_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            for (i, r) in results {
                match r {
                    Ok(size) => {
                        sizes[i] = Some(size);
                        changed |= index.insert(&objects[i].rel, &objects[i].version, size);
                    }
                    // Deleted since the listing: not part of this snapshot.
                    Err(StoreError::Gone) => {
                        gone.insert(i);
                    }
                    Err(e) => return Err(e),
                }
            }
            info!(
                prefix,
                sized = missing.len(),
                cached = index.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "sized messages missing from the size index"
            );
        }
        let mut keep = Vec::with_capacity(objects.len());
        let mut messages = Vec::with_capacity(objects.len());
        for (i, o) in objects.drain(..).enumerate() {
            if gone.contains(&i) {
                continue;
            }
            messages.push(MessageInfo {
                uidl: uidl_for(&o.rel),
                size: sizes[i].unwrap_or(0),
            });
            keep.push(o);
        }
        let live: HashSet<&str> = keep.iter().map(|o| o.rel.as_str()).collect();
        changed |= index.retain(&live);
        if changed || (!had_index && !keep.is_empty()) {
            let key = Inner::reserved_key(&prefix, INDEX_NAME);
            // A cache: failing to write it costs the next login time, not mail.
            if let Err(e) = inner
                .put_small(&key, index.to_bytes(), "application/json")
                .await
            {
                warn!(key, error = %e, "cannot write the size index");
            }
        }
        Ok(Box::new(S3Drop {
            inner: self.inner.clone(),
            prefix,
            objects: keep,
            messages,
        }))
    }

    async fn append(
        &self,
        mailbox: &MailboxId,
        message: MessageStream,
    ) -> Result<String, StoreError> {
        let inner = &self.inner;
        let prefix = self.mailbox_prefix(mailbox);
        let name = new_object_name();
        let key = format!("{prefix}{name}");

        // Up to IN_MEMORY_UPLOAD in memory; past that, spool to a file.
        let mut head = Vec::with_capacity(CHUNK);
        let mut message = popgate_store::CountingReader::new(message, CHUNK);
        let mut spool: Option<(tempfile::TempPath, tokio::fs::File)> = None;
        while let Some(chunk) = message
            .next_chunk()
            .await
            .map_err(|e| io_temporary("reading the message", e))?
        {
            let n = chunk.len();
            match &mut spool {
                Some((_, file)) => file
                    .write_all(chunk)
                    .await
                    .map_err(|e| io_temporary("spooling the message", e))?,
                None if head.len() + n <= IN_MEMORY_UPLOAD => head.extend_from_slice(chunk),
                None => {
                    let (file, path) = tempfile::NamedTempFile::new()
                        .map_err(|e| io_temporary("creating a spool file", e))?
                        .into_parts();
                    let mut file = tokio::fs::File::from_std(file);
                    file.write_all(&head)
                        .await
                        .and(file.write_all(chunk).await)
                        .map_err(|e| io_temporary("spooling the message", e))?;
                    head = Vec::new();
                    spool = Some((path, file));
                }
            }
        }
        let (stored, pop3_size) = (message.octets(), message.pop3_size());
        let body = match &mut spool {
            None => ByteStream::from(head),
            Some((path, file)) => {
                file.flush()
                    .await
                    .map_err(|e| io_temporary("spooling the message", e))?;
                ByteStream::read_from()
                    .path(&**path)
                    .buffer_size(CHUNK)
                    .build()
                    .await
                    .map_err(|e| StoreError::Temporary(format!("reading the spool file: {e}")))?
            }
        };
        inner
            .client
            .put_object()
            .bucket(&inner.bucket)
            .key(&key)
            .content_type("message/rfc822")
            .content_length(stored as i64)
            .metadata(SIZE_METADATA, pop3_size.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&format!("storing {key}"), e))?;
        debug!(key, stored, pop3_size, "delivered");
        Ok(uidl_for(&name))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner
            .client
            .head_bucket()
            .bucket(&self.inner.bucket)
            .send()
            .await
            .map_err(|e| match classify("checking the bucket", e) {
                StoreError::Gone => {
                    StoreError::Permanent(format!("bucket {} does not exist", self.inner.bucket))
                }
                other => other,
            })?;
        Ok(())
    }
}

/// One session's snapshot of a mailbox on S3.
///
/// Fencing is best effort. S3 has no conditional multi-object delete (and
/// no transaction spanning a check and a delete), so the newest committed
/// fencing token is kept in `<prefix>.popgate/fence`: an expunge reads it,
/// refuses a token older than it, records its own, then deletes. A session
/// whose lock expired is refused once a newer session has committed an
/// expunge; a race between the check and the delete of two sessions that
/// both believe they hold the lock is not excluded.
pub struct S3Drop {
    inner: Arc<Inner>,
    prefix: String,
    objects: Vec<Object>,
    messages: Vec<MessageInfo>,
}

#[async_trait]
impl Maildrop for S3Drop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    async fn fetch(&self, index: usize) -> Result<MessageStream, StoreError> {
        let o = popgate_store::message_at(&self.objects, index)?;
        let resp = self.inner.get(o).await?;
        Ok(Box::pin(IdleTimeout::new(
            Box::pin(resp.body.into_async_read()),
            self.inner.read_timeout,
        )))
    }

    async fn expunge(
        &mut self,
        indexes: &[usize],
        fence: u64,
    ) -> Result<ExpungeReport, StoreError> {
        let indexes = popgate_store::expunge_targets(indexes, self.objects.len())?;
        if indexes.is_empty() {
            return Ok(ExpungeReport::default());
        }
        self.inner.check_fence(&self.prefix, fence).await?;
        let targets: Vec<Object> = indexes.iter().map(|&i| self.objects[i].clone()).collect();
        let present = self.inner.still_present(&self.prefix, &targets).await?;
        let already_gone = targets.len() - present.len();
        let keys: Vec<String> = present.into_iter().map(|o| o.key).collect();
        let wanted = keys.len();
        let inner = self.inner.clone();
        let outcome = delete_all(keys, DELETE_ATTEMPTS, inner.retry_backoff, |batch| {
            let inner = inner.clone();
            async move { inner.delete_batch(batch).await }
        })
        .await;
        if !outcome.failed.is_empty() {
            warn!(
                prefix = %self.prefix,
                failed = outcome.failed.len(),
                wanted,
                keys = ?outcome.failed.iter().take(5).collect::<Vec<_>>(),
                "messages could not be deleted"
            );
            let text = format!(
                "{} of {wanted} messages could not be deleted: {}",
                outcome.failed.len(),
                outcome
                    .last_error
                    .as_deref()
                    .unwrap_or("no confirmation from S3")
            );
            return Err(if outcome.permanent {
                StoreError::Permanent(text)
            } else {
                StoreError::Temporary(text)
            });
        }
        Ok(ExpungeReport {
            deleted: outcome.deleted,
            already_gone,
        })
    }
}
