//! `store = { kind = "s3", ... }`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;
use super::duration::duration;

/// `store = { kind = "s3", bucket = "mail", ... }`. Without the two keys,
/// credentials come from the standard AWS chain (`AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`, profile, web identity / IRSA, ECS, EC2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    pub bucket: String,
    #[serde(default = "s3_default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(
        default = "s3_default_connect_timeout",
        deserialize_with = "s3_connect_timeout"
    )]
    pub connect_timeout: Duration,
    #[serde(
        default = "s3_default_request_timeout",
        deserialize_with = "s3_request_timeout"
    )]
    pub request_timeout: Duration,
    #[serde(
        default = "s3_default_read_timeout",
        deserialize_with = "s3_read_timeout"
    )]
    pub read_timeout: Duration,
    #[serde(default = "s3_default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "s3_default_list_page_size")]
    pub list_page_size: u32,
}

// Inside a `kind`-tagged table figment can only name the table, so these
// errors name the field themselves.
fn s3_connect_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d).map_err(|e| serde::de::Error::custom(format!("connect_timeout: {e}")))
}
fn s3_request_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d).map_err(|e| serde::de::Error::custom(format!("request_timeout: {e}")))
}
fn s3_read_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d).map_err(|e| serde::de::Error::custom(format!("read_timeout: {e}")))
}
fn s3_defaults() -> store_s3::S3Config {
    store_s3::S3Config::new("")
}
fn s3_default_prefix() -> String {
    s3_defaults().prefix
}
fn s3_default_connect_timeout() -> Duration {
    s3_defaults().connect_timeout
}
fn s3_default_request_timeout() -> Duration {
    s3_defaults().request_timeout
}
fn s3_default_read_timeout() -> Duration {
    s3_defaults().read_timeout
}
fn s3_default_max_attempts() -> u32 {
    s3_defaults().max_attempts
}
fn s3_default_list_page_size() -> u32 {
    s3_defaults().list_page_size
}

impl S3Section {
    pub fn store_config(&self) -> store_s3::S3Config {
        let credentials = match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Some(store_s3::StaticCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
            }),
            _ => None,
        };
        store_s3::S3Config {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            force_path_style: self.force_path_style,
            credentials,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            read_timeout: self.read_timeout,
            max_attempts: self.max_attempts,
            list_page_size: self.list_page_size,
        }
    }

    /// `key` is the section's own key, like `tenants[0].store`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    format!("{key}.secret_access_key"),
                    "missing: access_key_id needs it (or leave both out for the AWS credential chain)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{key}.access_key_id"),
                    "missing: secret_access_key needs it (or leave both out for the AWS credential chain)",
                ));
            }
            _ => {}
        }
        self.store_config()
            .validate()
            .map_err(|(field, e)| ConfigError::new(format!("{key}.{field}"), e))
    }
}
