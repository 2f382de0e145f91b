//! The settings of an S3 store and their validation.

use std::time::Duration;

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
    /// Whether commits are fenced by conditional writes (`If-Match`,
    /// `If-None-Match`, conditional deletes). See [`ConditionalWrites`].
    pub conditional_writes: ConditionalWrites,
}

/// How an S3 store fences commits.
///
/// - `On`: the fence object is a compare-and-swap (`PutObject` with
///   `If-Match`/`If-None-Match`), bumped when a session opens the maildrop,
///   and each message is deleted only if its ETag is still the one the
///   session's snapshot saw. A server that ignores the conditions is an
///   error (`[SYS/TEMP]`, logged), never a silent downgrade.
/// - `Off`: best effort: the fence object is read, then written, at
///   expunge; a stale holder can slip between the two.
/// - `Auto` (the default): probes the server once (two `If-None-Match: *`
///   writes of one probe object: the second must be refused) and is `On`
///   when the server honours conditions, else `Off` with a warning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConditionalWrites {
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for ConditionalWrites {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ConditionalWrites::Auto),
            "on" => Ok(ConditionalWrites::On),
            "off" => Ok(ConditionalWrites::Off),
            other => Err(format!("{other:?}: use \"auto\", \"on\" or \"off\"")),
        }
    }
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
            conditional_writes: ConditionalWrites::Auto,
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

    pub(crate) fn region_name(&self) -> String {
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
