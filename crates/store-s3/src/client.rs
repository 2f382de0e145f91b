//! The S3 client a store talks through (timeouts, retries, credentials, the
//! TLS stack), and how its errors map onto [`StoreError`].

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedHttpClient, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use popgate_store::StoreError;

use crate::S3Config;

/// hyper 1 with rustls and ring: the one TLS stack of the workspace.
fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The client for a validated `config`, retrying with exponential backoff
/// from `backoff`. Connects to nothing yet.
pub(crate) fn build(config: &S3Config, backoff: Duration) -> Client {
    let http = http_client();
    let region = Region::new(config.region_name());
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
    Client::from_conf(builder.build())
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
pub(crate) fn classify<E>(what: &str, e: SdkError<E>) -> StoreError
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

pub(crate) fn io_temporary(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Temporary(format!("{what}: {e}"))
}
