//! From a validated configuration to running parts: the only place that
//! names concrete backends.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[cfg(feature = "redis")]
use backend_redis::{RedisLimits, RedisLocks};
use directory_passwd_file::PasswdFile;
use popgate_auth::Directory;
use popgate_lock::limits::{Limits, LimitsConfig, MemoryLimits};
use popgate_lock::{MailboxLocks, MemoryLocks};
use popgate_metrics::{BackendMonitor, Exporter, Metrics, ServeState, ServerReadiness};
use popgate_server::tls::TlsProvider;
use popgate_server::{
    Listener, ListenerConfig, Server, SessionConfig, SessionRegistry, Shared, Tenant, Tenants,
    TlsMode,
};
use popgate_store::MailStore;
#[cfg(feature = "maildir")]
use store_maildir::{MaildirConfig, MaildirStore};
use tracing_subscriber::EnvFilter;

use crate::admin::FleetAdmin;
use crate::config::{
    self, AuthSection, Config, ConfigError, ExpireSetting, LogFormat, StoreSection, TlsSetting,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) => ExitCode::from(2),
            Error::Runtime(_) => ExitCode::FAILURE,
        }
    }
}

/// Loads and validates. Without a file, prepares the embedded default's
/// data folder first (when `prepare` is set), so it works out of the box.
pub fn load_checked(file: Option<&Path>, prepare: bool) -> Result<Config, ConfigError> {
    if file.is_none() && std::env::var_os(config::CONFIG_ENV).is_none() && prepare {
        prepare_default_data().map_err(|e| ConfigError::new("data", e))?;
    }
    let config = config::load(file)?;
    config.validate()?;
    Ok(config)
}

/// `check-config`: what `serve` would refuse is an error; what it would
/// warn about at start (a passwd-file's malformed lines or unusable hashes,
/// with file and line) is printed to standard error as `serve` logs it.
pub fn check(file: Option<&Path>) -> Result<Config, ConfigError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
    // Validation opens every passwd-file, as serve does, which warns.
    load_checked(file, false)
}

fn prepare_default_data() -> Result<(), String> {
    let mail = Path::new("data/mail");
    std::fs::create_dir_all(mail).map_err(|e| format!("cannot create {}: {e}", mail.display()))?;
    let passwd = Path::new("data/passwd");
    if !passwd.exists() {
        std::fs::write(
            passwd,
            "# Dovecot passwd-file: user@domain:{SCHEME}hash\n\
             # Add a user:  echo \"bob@localhost:$(echo secret | popgate pw)\" >> data/passwd\n",
        )
        .map_err(|e| format!("cannot create {}: {e}", passwd.display()))?;
    }
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_env("POPGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(&config.server.log_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match config.server.log_format {
        LogFormat::Json => {
            let _ =
                tracing::subscriber::set_global_default(json_subscriber(filter, std::io::stderr));
        }
        LogFormat::Text => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .try_init();
        }
    }
}

/// `log_format = "json"`: one object per line, the event's fields at the
/// top level and the fields of the span it is in (a session's id, client,
/// tenant, user) under `span`. No list of every enclosing span: with it,
/// each span field would appear twice (in `span` and in `spans`), and a
/// session's events name none of the span's fields again, so every field
/// appears once per line.
pub(crate) fn json_subscriber<W>(
    filter: EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .finish()
}

/// The tenants, their directories checking passwords in `hashing`'s slots.
pub(crate) fn build_tenants(
    config: &Config,
    hashing: &Arc<popgate_auth::HashPool>,
) -> Result<Tenants, ConfigError> {
    let mut list = Vec::new();
    #[cfg(feature = "postgres")]
    let mut pools = crate::pg::Pools::default();
    for (i, t) in config.tenants.iter().enumerate() {
        let directory: Arc<dyn Directory> = match &t.auth {
            AuthSection::PasswdFile { path } => Arc::new(
                PasswdFile::open_with(path, hashing.for_tenant(&t.name)).map_err(|e| {
                    ConfigError::new(
                        format!("tenants[{i}].auth.path"),
                        format!("{}: {e}", path.display()),
                    )
                })?,
            ),
            #[cfg(not(feature = "postgres"))]
            AuthSection::Postgres(_) => {
                return Err(config::unbuilt(
                    format!("tenants[{i}].auth"),
                    "kind \"postgres\"",
                    "postgres",
                ));
            }
            #[cfg(feature = "postgres")]
            AuthSection::Postgres(pg) => Arc::new(
                backend_postgres::PgDirectory::new(
                    pools.get(pg, &format!("tenants[{i}].auth"))?,
                    t.name.clone(),
                )
                .with_hashing(hashing.for_tenant(&t.name)),
            ),
            #[cfg(any(feature = "mysql", feature = "postgres"))]
            AuthSection::Sql(sql) => {
                let key = format!("tenants[{i}].auth");
                Arc::new(
                    directory_sql::SqlDirectory::connect_lazy(
                        &sql.sql_config(&key)?,
                        t.name.clone(),
                        hashing.for_tenant(&t.name),
                    )
                    .map_err(|(field, e)| ConfigError::new(format!("{key}.{field}"), e))?,
                )
            }
            #[cfg(not(any(feature = "mysql", feature = "postgres")))]
            AuthSection::Sql(_) => {
                return Err(config::unbuilt(
                    format!("tenants[{i}].auth"),
                    "kind \"sql\"",
                    "mysql",
                ));
            }
            #[cfg(feature = "ldap")]
            AuthSection::Ldap(ldap) => {
                Arc::new(ldap.build(&format!("tenants[{i}].auth"), hashing.for_tenant(&t.name))?)
            }
            #[cfg(not(feature = "ldap"))]
            AuthSection::Ldap(_) => {
                return Err(config::unbuilt(
                    format!("tenants[{i}].auth"),
                    "kind \"ldap\"",
                    "ldap",
                ));
            }
            #[cfg(feature = "http-auth")]
            AuthSection::Http(http) => {
                Arc::new(http.build(&format!("tenants[{i}].auth"), &t.name)?)
            }
            #[cfg(not(feature = "http-auth"))]
            AuthSection::Http(_) => {
                return Err(config::unbuilt(
                    format!("tenants[{i}].auth"),
                    "kind \"http\"",
                    "http-auth",
                ));
            }
        };
        let store: Arc<dyn MailStore> = match &t.store {
            #[cfg(not(feature = "maildir"))]
            StoreSection::Maildir { .. } => {
                return Err(config::unbuilt(
                    format!("tenants[{i}].store"),
                    "kind \"maildir\"",
                    "maildir",
                ));
            }
            #[cfg(feature = "maildir")]
            StoreSection::Maildir {
                path,
                uidl_format,
                follow_symlinks,
                courier_uidls,
            } => Arc::new(
                MaildirStore::new(MaildirConfig {
                    path_template: path.clone(),
                    uidl_format: uidl_format.clone(),
                })
                .map_err(|e| ConfigError::new(format!("tenants[{i}].store"), e.to_string()))?
                .with_follow_symlinks(*follow_symlinks)
                .with_courier_uidls(*courier_uidls),
            ),
            #[cfg(not(feature = "postgres"))]
            StoreSection::Postgres(_) => {
                return Err(config::unbuilt(
                    format!("tenants[{i}].store"),
                    "kind \"postgres\"",
                    "postgres",
                ));
            }
            #[cfg(feature = "postgres")]
            StoreSection::Postgres(pg) => Arc::new(backend_postgres::PgStore::new(
                pools.get(pg, &format!("tenants[{i}].store"))?,
            )),
            #[cfg(not(feature = "s3"))]
            StoreSection::S3(_) => {
                return Err(config::unbuilt(
                    format!("tenants[{i}].store"),
                    "kind \"s3\"",
                    "s3",
                ));
            }
            #[cfg(feature = "s3")]
            StoreSection::S3(s3) => Arc::new(
                store_s3::S3Store::new(s3.store_config())
                    .map_err(|e| ConfigError::new(format!("tenants[{i}].store"), e))?,
            ),
        };
        let mut tenant = Tenant::new(t.name.clone(), t.domains.clone(), directory, store);
        tenant.max_sessions = t.max_sessions;
        tenant.login_delay = t.login_delay;
        tenant.expire = t.expire.map(|e| match e {
            ExpireSetting::Days(d) => pop3_proto::capa::Expire::Days(d),
            ExpireSetting::Never => pop3_proto::capa::Expire::Never,
        });
        list.push(tenant);
    }
    Tenants::new(list).map_err(|e| ConfigError::new("tenants", e.to_string()))
}

pub(crate) fn session_config(config: &Config) -> SessionConfig {
    let s = &config.server;
    SessionConfig {
        hostname: s.hostname.clone(),
        auth_timeout: s.auth_timeout,
        idle_timeout: s.idle_timeout,
        send_timeout: s.send_timeout,
        max_auth_failures: s.max_auth_failures,
        max_bad_commands: s.max_bad_commands,
        auth_failure_delay: s.auth_failure_delay,
        command_timeout: s.command_timeout,
        implementation: s
            .show_version
            .then(|| concat!("popgate ", env!("CARGO_PKG_VERSION")).to_string()),
    }
}

/// Inside the runtime: the Redis client spawns its connection task there.
/// It connects on first use, so popgate starts while Redis is down (logins
/// answer [SYS/TEMP] and /readyz fails until it is back).
/// Mailbox locks and abuse limits: in this process, or fleet-wide in Redis.
/// The fleet coordination a server needs: mailbox locks and abuse limits.
/// And the fleet's live sessions for the admin endpoints.
pub(crate) type Coordination = (Arc<dyn MailboxLocks>, Arc<dyn Limits>, Arc<FleetAdmin>);

/// The abuse limits of a configuration: `server`'s caps and bounds and
/// `[limits]`. A reload hands them to [`Limits::reconfigure`].
pub(crate) fn limits_config(config: &Config) -> LimitsConfig {
    let s = &config.server;
    LimitsConfig {
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        penalty_base: s.auth_penalty,
        penalty_max: s.auth_penalty_max,
        login_timeout: s.login_timeout,
        max_login_commands: s.max_login_commands,
        ipv4_prefix: config.limits.ipv4_prefix,
        ipv6_prefix: config.limits.ipv6_prefix,
        known_good_for: config.limits.known_good_for,
        ..LimitsConfig::default()
    }
}

pub(crate) fn build_coordination(
    config: &Config,
    sessions: &Arc<SessionRegistry>,
) -> Result<Coordination, ConfigError> {
    let limits = limits_config(config);
    #[cfg(feature = "redis")]
    if let Some(redis) = config.locks.redis_config()? {
        let locks = RedisLocks::new(&redis).map_err(|e| ConfigError::new("locks", e))?;
        let limits = RedisLimits::new(&locks, limits);
        let admin = FleetAdmin::redis(sessions.clone(), &locks, redis.ttl);
        return Ok((Arc::new(locks), limits, Arc::new(admin)));
    }
    // Without the feature, `backend = "redis"` was refused by validation.
    config.locks.validate()?;
    Ok((
        Arc::new(MemoryLocks::new()),
        Arc::new(MemoryLimits::new(limits)),
        Arc::new(FleetAdmin::local(sessions.clone())),
    ))
}

pub async fn serve(file: Option<PathBuf>) -> Result<(), Error> {
    let config = load_checked(file.as_deref(), true)?;
    init_logging(&config);
    // Every session id of this process starts with this prefix: the line
    // that ties a session id to a pod.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("POPGATE_COMMIT"),
        session_prefix = %format!("{:08x}", popgate_server::observer::process_prefix()),
        "popgate starting"
    );
    crate::rlimit::raise_for(config.server.max_connections);
    // One hashing pool for every tenant's directory: its slots bound the
    // memory and CPU that password checks take, with a share per tenant.
    let hashing = popgate_auth::HashPool::new(config.server.password_hashing.pool_config());
    let tenants = build_tenants(&config, &hashing)?;
    #[cfg(feature = "postgres")]
    crate::pg::check_schemas(&config).await?;
    let tls = match config.tls_settings() {
        Some(settings) => {
            let provider = TlsProvider::load(settings).map_err(|e| ConfigError::new("tls", e))?;
            Some(Arc::new(provider))
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        config.tenants.iter().map(|t| t.name.clone()),
    ));
    metrics.watch_hashing(hashing.clone());
    metrics.set_connection_caps(
        config.server.max_connections,
        config.server.max_connections_per_ip,
    );
    for t in &config.tenants {
        if let Some(cap) = t.max_sessions {
            metrics.set_tenant_session_cap(&t.name, cap);
        }
    }
    if let Some(tls) = &tls {
        metrics.watch_tls(tls.clone());
    }
    let serve_state = Arc::new(ServeState::default());
    // Bound before POP3 listens: a taken metrics port stops the start.
    let metrics_tcp = match &config.metrics {
        Some(m) => Some(
            tokio::net::TcpListener::bind(&m.address)
                .await
                .map_err(|e| {
                    Error::Runtime(format!(
                        "metrics.address: cannot listen on {}: {e}",
                        m.address
                    ))
                })?,
        ),
        None => None,
    };
    let mut listeners = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let tcp = tokio::net::TcpListener::bind(&l.address)
            .await
            .map_err(|e| {
                Error::Runtime(format!(
                    "listeners[{i}].address: cannot listen on {}: {e}",
                    l.address
                ))
            })?;
        let tls = match l.tls {
            TlsSetting::None => TlsMode::None,
            TlsSetting::Starttls => TlsMode::StartTls,
            TlsSetting::Implicit => TlsMode::Implicit,
        };
        let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(address = %local, "listening for POP3");
        listeners.push(Listener {
            tcp,
            config: ListenerConfig {
                tls,
                plaintext_auth: l.plaintext_auth,
                default_tenant: l.default_tenant.clone(),
                proxy_protocol: l.proxy_protocol,
                // Validated by Config::validate.
                trusted_proxies: l
                    .trusted_proxies
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect(),
            },
        });
    }
    let sessions = SessionRegistry::new();
    let (locks, limits, admin) = build_coordination(&config, &sessions)?;
    let server = Server::new(Shared {
        config: session_config(&config),
        tenants,
        locks: locks.clone(),
        observer: metrics.clone(),
        limits: limits.clone(),
        tls: tls.clone(),
        sessions,
    });
    let mut monitor = None;
    if let (Some(tcp), Some(m)) = (metrics_tcp, &config.metrics) {
        let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(address = %local, "serving metrics");
        let readiness = Arc::new(ServerReadiness::new(serve_state.clone()));
        let backends = Arc::new(
            BackendMonitor::of(&server.shared())
                .timing(m.backend_check_interval, m.backend_check_timeout),
        );
        monitor = Some(backends.clone());
        tokio::spawn(backends.clone().run(metrics.clone()));
        tokio::spawn(
            Exporter::new(metrics.clone(), readiness)
                .backends(backends)
                .admin(admin)
                .bearer_token(m.bearer_token.clone())
                .serve(tcp),
        );
    }
    let grace = config.server.shutdown_grace;
    // SIGHUP (or a changed file) reloads; it never ends the process.
    tokio::spawn(
        crate::reload::Reloader {
            file,
            running: config,
            handle: server.handle(),
            hashing,
            locks,
            limits,
            tls,
            metrics,
            backends: monitor,
        }
        .run(),
    );
    serve_state.set_listening();
    // /readyz turns 503 as soon as the drain begins.
    let shutdown = async move {
        shutdown_signal().await;
        serve_state.set_draining();
    };
    server.run(listeners, shutdown, grace).await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `deliver`'s exit statuses, from sysexits.h as dovecot-lda uses them: an
/// MTA piping mail in (Postfix `pipe`, exim, procmail) bounces on anything
/// but EX_TEMPFAIL, so every failure that may pass is EX_TEMPFAIL and the
/// MTA keeps the message queued.
pub mod sysexits {
    /// The directory does not know the recipient: bounce.
    pub const NOUSER: u8 = 67;
    /// Anything that may pass: a store or directory down, a bad config
    /// during a deploy, an interrupted input. The MTA retries.
    pub const TEMPFAIL: u8 = 75;
}

/// A delivery failure and the status it exits with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliverError {
    pub message: String,
    pub status: u8,
}

impl DeliverError {
    fn temp(message: impl Into<String>) -> Self {
        DeliverError {
            message: message.into(),
            status: sysexits::TEMPFAIL,
        }
    }
}

/// What deliver says of a directory answer that names no mailbox of the
/// tenant (the details are logged by [`popgate_server::Tenant::directed_mailbox`]).
fn misdirected(why: popgate_server::Misdirected) -> &'static str {
    match why {
        popgate_server::Misdirected::NotThisTenant => {
            "the directory names a mailbox that is not this tenant's"
        }
        popgate_server::Misdirected::BadLocation => {
            "the directory names a mailbox location outside this tenant's root"
        }
    }
}

/// Appends standard input to `user`'s mailbox, once the tenant's directory
/// has said the user exists: the mailbox a POP3 login of `user` opens (the
/// directory's `user` and `location`). Prints the new message's UIDL.
pub async fn deliver(file: Option<PathBuf>, user: String) -> Result<(), DeliverError> {
    let config = load_checked(file.as_deref(), true)
        .map_err(|e| DeliverError::temp(format!("configuration error: {e}")))?;
    let hashing = popgate_auth::HashPool::new(config.server.password_hashing.pool_config());
    let tenants = build_tenants(&config, &hashing)
        .map_err(|e| DeliverError::temp(format!("configuration error: {e}")))?;
    let default_tenant = config
        .listeners
        .iter()
        .find_map(|l| l.default_tenant.as_deref());
    let no_user = || DeliverError {
        message: format!("{user:?}: no such user"),
        status: sysexits::NOUSER,
    };
    let (tenant, login) = tenants.resolve(&user, default_tenant).ok_or_else(no_user)?;
    let found = tenant
        .directory
        .find_user(popgate_auth::Login::new(&login.local, &login.domain))
        .await
        .map_err(|e| DeliverError::temp(format!("{user:?}: {e}")))?
        .ok_or_else(no_user)?;
    // The mailbox a POP3 login of this user opens: the directory's alias
    // and location, resolved as the session resolves them.
    let mailbox = tenant
        .directed_mailbox(login, &found)
        .map_err(|why| DeliverError::temp(format!("{user:?}: {}", misdirected(why))))?;
    let stdin: popgate_store::MessageStream = Box::pin(tokio::io::stdin());
    let uidl = tenant
        .store
        .append(&mailbox, stdin)
        .await
        .map_err(|e| DeliverError::temp(format!("delivery to {mailbox} failed: {e}")))?;
    println!("{uidl}");
    Ok(())
}

#[cfg(test)]
mod tests;
