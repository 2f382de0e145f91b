//! Where the Redis is, and the connection to it: one server (or a proxy in
//! front of more), a master found through Redis Sentinel, or a Redis
//! Cluster.
//!
//! # Following a failover
//!
//! - One server: redis's `ConnectionManager` reconnects to the same address.
//! - Sentinel: the master's address changes. The connection is to the master
//!   the sentinels named (and which confirmed its role), and it is dropped
//!   and looked up again through the sentinels when calls fail at the
//!   connection level, or when the server answers `READONLY` (it was demoted
//!   to a replica). redis's own async Sentinel connection does not do this.
//! - Cluster: redis's `ClusterConnection` follows `MOVED`/`ASK` and refreshes
//!   its slot map when a replica is promoted; a connection that stays broken
//!   is replaced, as for one server.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    Client, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult,
    TlsCertificates, TlsMode, Value,
};

/// Where the Redis is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// One server: `redis://[user:password@]host:port[/db]`, `rediss://...`,
    /// or `redis+unix:///path`.
    Url(String),
    /// A master found through Redis Sentinel.
    Sentinel(SentinelEndpoint),
    /// A Redis Cluster: some of its nodes (`redis://` or `rediss://` URLs,
    /// with the password in each); the others are discovered.
    Cluster(Vec<String>),
}

/// A Sentinel-watched master.
#[derive(Clone, Debug, Default)]
pub struct SentinelEndpoint {
    /// The sentinels: `redis://[:password@]host:port` or `rediss://...`.
    /// All of them use one scheme and one password (the first URL's).
    /// `rediss://` means TLS to the sentinels and to the master.
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the master by.
    pub master_name: String,
    /// The master's ACL user, if any.
    pub master_username: Option<String>,
    /// The master's password, if any.
    pub master_password: Option<String>,
    /// The master's database number.
    pub master_db: i64,
}

impl Endpoint {
    /// What to print of it: never a password.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Url(u) => super::config::redact(u),
            Endpoint::Sentinel(s) => format!(
                "sentinel master {:?} via {}",
                s.master_name,
                s.sentinels
                    .iter()
                    .map(|u| super::config::redact(u))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Endpoint::Cluster(nodes) => format!(
                "cluster via {}",
                nodes
                    .iter()
                    .map(|u| super::config::redact(u))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// Checks that a URL names a Redis we can talk to over the network or a
/// socket; `what` names the entry in the error.
fn check_scheme(url: &str, unix_ok: bool) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let mut schemes = vec!["redis://", "rediss://"];
    if unix_ok {
        schemes.extend(["redis+unix://", "unix://"]);
    }
    if schemes.iter().any(|s| lower.starts_with(s)) {
        Ok(())
    } else {
        Err(format!(
            "{}: use redis://host:port or rediss://host:port",
            super::config::redact(url)
        ))
    }
}

fn certificates(pem: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// Builds clients (and connections) for an [`Endpoint`].
pub(crate) enum Connector {
    Single(Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>, String),
    Cluster(ClusterClient),
}

impl Connector {
    /// Checks the endpoint and prepares its client, without connecting.
    pub(crate) fn new(
        endpoint: &Endpoint,
        tls_ca: Option<&[u8]>,
        op_timeout: Duration,
    ) -> Result<Connector, String> {
        match endpoint {
            Endpoint::Url(url) => {
                check_scheme(url, true)?;
                let client = match tls_ca {
                    None => Client::open(url.as_str()),
                    Some(pem) => Client::build_with_tls(url.as_str(), certificates(pem)),
                };
                client
                    .map(Connector::Single)
                    .map_err(|e| format!("{}: {e}", super::config::redact(url)))
            }
            Endpoint::Sentinel(s) => sentinel_client(s, tls_ca)
                .map(|c| Connector::Sentinel(tokio::sync::Mutex::new(c), s.master_name.clone())),
            Endpoint::Cluster(nodes) => {
                if nodes.is_empty() {
                    return Err("needs at least one node".into());
                }
                for n in nodes {
                    check_scheme(n, false)?;
                }
                let mut b = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(op_timeout)
                    .response_timeout(op_timeout)
                    .retries(2);
                if let Some(pem) = tls_ca {
                    b = b.certs(certificates(pem));
                }
                b.build().map(Connector::Cluster).map_err(|e| e.to_string())
            }
        }
    }

    /// Whether a server that says `READONLY` or stops answering means the
    /// master moved, so the connection must be looked up again.
    pub(crate) fn follows_master(&self) -> bool {
        matches!(self, Connector::Sentinel(..))
    }

    /// A connection. For one server, a lazy manager (no network I/O here);
    /// for Sentinel, the current master's (asks the sentinels); for a
    /// Cluster, a connection to its nodes.
    pub(crate) async fn connect(&self, config: &ConnectionManagerConfig) -> RedisResult<Conn> {
        match self {
            Connector::Single(client) => {
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    .map(Conn::Manager)
            }
            Connector::Sentinel(sentinel, name) => {
                let client = sentinel
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(|e| {
                        ::redis::RedisError::from((
                            ::redis::ErrorKind::Io,
                            "no master from the sentinels",
                            format!("{name}: {e}"),
                        ))
                    })?;
                tracing::info!(
                    master = %client.get_connection_info().addr(),
                    name = %name,
                    "redis master found through sentinel"
                );
                ConnectionManager::new_lazy_with_config(client, config.clone()).map(Conn::Manager)
            }
            Connector::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }
}

fn sentinel_client(s: &SentinelEndpoint, tls_ca: Option<&[u8]>) -> Result<SentinelClient, String> {
    if s.sentinels.is_empty() {
        return Err("sentinels: needs at least one sentinel address".into());
    }
    if s.master_name.is_empty() {
        return Err("master_name: the name the sentinels monitor the master by".into());
    }
    let mut addrs = Vec::new();
    let mut auth = None;
    let mut tls = None;
    for url in &s.sentinels {
        check_scheme(url, false)?;
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("sentinels: {}: {e}", super::config::redact(url)))?;
        let this_tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        if *tls.get_or_insert(this_tls) != this_tls {
            return Err("sentinels: mix redis:// and rediss://".into());
        }
        let settings = info.redis_settings();
        if auth.is_none() {
            auth = Some((
                settings.username().map(str::to_owned),
                settings.password().map(str::to_owned),
            ));
        }
        addrs.push(info.addr().clone());
    }
    let tls = tls.unwrap_or(false);
    let mut b = SentinelClientBuilder::new(addrs, &s.master_name, SentinelServerType::Master)
        .map_err(|e| format!("sentinels: {e}"))?
        .set_client_to_redis_db(s.master_db);
    if let Some((user, password)) = auth {
        if let Some(u) = user {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = password {
            b = b.set_client_to_sentinel_password(p);
        }
    }
    if let Some(u) = &s.master_username {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = &s.master_password {
        b = b.set_client_to_redis_password(p);
    }
    if tls {
        b = b
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(pem) = tls_ca {
            b = b
                .set_client_to_sentinel_certificates(certificates(pem))
                .set_client_to_redis_certificates(certificates(pem));
        }
    }
    b.build().map_err(|e| format!("sentinels: {e}"))
}

/// A connection to one server (through a reconnecting manager) or to a
/// Cluster; the lock scripts run on either.
#[derive(Clone)]
pub enum Conn {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
