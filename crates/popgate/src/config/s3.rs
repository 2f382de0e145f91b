//! `store = { kind = "s3", bucket = "mail", ... }`, read straight into the
//! backend's own [`store_s3::S3Config`]: its defaults are `S3Config::new`'s
//! and its checks are `S3Config::validate`'s; only the key names live here.
//! Without `access_key_id` and `secret_access_key`, credentials come from
//! the standard AWS chain (`AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`,
//! profile, web identity / IRSA, ECS, EC2).

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer};
use store_s3::{S3Config, StaticCredentials};

use super::ConfigError;

/// The keys of the table, as an unknown key's error lists them.
const KEYS: &[&str] = &[
    "bucket",
    "prefix",
    "region",
    "endpoint",
    "force_path_style",
    "access_key_id",
    "access_key_id_file",
    "secret_access_key",
    "secret_access_key_file",
    "connect_timeout",
    "request_timeout",
    "read_timeout",
    "max_attempts",
    "list_page_size",
    "conditional_writes",
];

#[derive(Debug)]
pub struct S3Section {
    config: S3Config,
    /// One of the two static keys, given without the other (refused by
    /// [`S3Section::validate`], which names the missing one).
    lone_key: Option<&'static str>,
    /// The static keys as given, each inline or as a file (a mounted
    /// secret), until [`S3Section::read_secret_files`] reads the files.
    keys: StaticKeys,
}

#[derive(Default)]
struct StaticKeys {
    id: Option<String>,
    id_file: Option<PathBuf>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
}

/// The secret stays out of the debug form (as `S3Config`'s does).
impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeys")
            .field("id", &self.id)
            .field("id_file", &self.id_file)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

impl Deref for S3Section {
    type Target = S3Config;
    fn deref(&self) -> &S3Config {
        &self.config
    }
}

impl S3Section {
    pub fn store_config(&self) -> S3Config {
        self.config.clone()
    }

    /// Reads `access_key_id_file` and `secret_access_key_file`; `key` is
    /// the section's own key.
    pub(super) fn read_secret_files(&mut self, key: &str) -> Result<(), ConfigError> {
        let k = &mut self.keys;
        let id_key = format!("{key}.access_key_id");
        super::secrets::resolve(&id_key, &mut k.id, &mut k.id_file)?;
        let secret_key = format!("{key}.secret_access_key");
        super::secrets::resolve(&secret_key, &mut k.secret, &mut k.secret_file)?;
        self.settle();
        Ok(())
    }

    /// Sets the static credentials from the keys given (a lone one is kept
    /// for `validate` to refuse).
    fn settle(&mut self) {
        let k = &self.keys;
        let id = k.id.is_some() || k.id_file.is_some();
        let secret = k.secret.is_some() || k.secret_file.is_some();
        self.lone_key = match (id, secret) {
            (true, false) => Some("access_key_id"),
            (false, true) => Some("secret_access_key"),
            _ => None,
        };
        self.config.credentials = match (&k.id, &k.secret) {
            (Some(id), Some(secret)) => Some(StaticCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
            }),
            _ => None,
        };
    }

    /// `key` is the section's own key, like `tenants[0].store`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for (name, file) in [
            ("access_key_id_file", &self.keys.id_file),
            ("secret_access_key_file", &self.keys.secret_file),
        ] {
            if file.is_some() {
                return Err(ConfigError::new(
                    format!("{key}.{name}"),
                    "not read (the configuration was not loaded from a file)",
                ));
            }
        }
        match self.lone_key {
            Some("access_key_id") => {
                return Err(ConfigError::new(
                    format!("{key}.secret_access_key"),
                    "missing: access_key_id needs it (or secret_access_key_file; or leave both out for the AWS credential chain)",
                ));
            }
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{key}.access_key_id"),
                    "missing: secret_access_key needs it (or access_key_id_file; or leave both out for the AWS credential chain)",
                ));
            }
            None => {}
        }
        self.config
            .validate()
            .map_err(|(field, e)| ConfigError::new(format!("{key}.{field}"), e))
    }
}

impl<'de> Deserialize<'de> for S3Section {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("S3Section", KEYS, Keys)
    }
}

struct Keys;

/// A duration value; its error names its key (inside a `kind`-tagged
/// table figment can only name the table).
fn timeout<'de, A: MapAccess<'de>>(map: &mut A, key: &str) -> Result<Duration, A::Error> {
    struct Value(Duration);
    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::duration::duration(d).map(Value)
        }
    }
    map.next_value::<Value>()
        .map(|v| v.0)
        .map_err(|e| de::Error::custom(format!("{key}: {e}")))
}

impl<'de> de::Visitor<'de> for Keys {
    type Value = S3Section;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct S3Section")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<S3Section, A::Error> {
        let mut c = S3Config::new("");
        let mut bucket = None;
        let mut keys = StaticKeys::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "bucket" => bucket = Some(map.next_value()?),
                "prefix" => c.prefix = map.next_value()?,
                "region" => c.region = map.next_value()?,
                "endpoint" => c.endpoint = map.next_value()?,
                "force_path_style" => c.force_path_style = map.next_value()?,
                "access_key_id" => keys.id = map.next_value()?,
                "access_key_id_file" => keys.id_file = map.next_value()?,
                "secret_access_key" => keys.secret = map.next_value()?,
                "secret_access_key_file" => keys.secret_file = map.next_value()?,
                "connect_timeout" => c.connect_timeout = timeout(&mut map, "connect_timeout")?,
                "request_timeout" => c.request_timeout = timeout(&mut map, "request_timeout")?,
                "read_timeout" => c.read_timeout = timeout(&mut map, "read_timeout")?,
                "max_attempts" => c.max_attempts = map.next_value()?,
                "list_page_size" => c.list_page_size = map.next_value()?,
                "conditional_writes" => {
                    let v: String = map.next_value()?;
                    c.conditional_writes = v
                        .parse()
                        .map_err(|e| de::Error::custom(format!("conditional_writes: {e}")))?;
                }
                other => return Err(de::Error::unknown_field(other, KEYS)),
            }
        }
        c.bucket = bucket.ok_or_else(|| de::Error::missing_field("bucket"))?;
        for (name, both) in [
            ("access_key_id", keys.id.is_some() && keys.id_file.is_some()),
            (
                "secret_access_key",
                keys.secret.is_some() && keys.secret_file.is_some(),
            ),
        ] {
            if both {
                return Err(de::Error::custom(format!(
                    "{name} and {name}_file are both set: give one of them"
                )));
            }
        }
        let mut section = S3Section {
            config: c,
            lone_key: None,
            keys,
        };
        section.settle();
        Ok(section)
    }
}
