//! PostgreSQL in the binary: one pool per distinct setting, the schema
//! check before serving, `popgate migrate` and `popgate user ...` (the
//! `kind = "postgres"` settings are `config::PgSection`).

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use backend_postgres::{PgConfig, PgDirectory, SchemaStatus};
use popgate_auth::scheme::{self, Scheme};
use sqlx::postgres::PgPool;

use crate::config::{AuthSection, Config, ConfigError, PgSection, StoreSection};
use crate::wiring::{Error, load_checked};

/// Every PostgreSQL section of the configuration with its key, in order.
pub fn sections(config: &Config) -> Vec<(String, &PgSection)> {
    let mut out = Vec::new();
    for (i, t) in config.tenants.iter().enumerate() {
        if let StoreSection::Postgres(pg) = &t.store {
            out.push((format!("tenants[{i}].store"), pg));
        }
        if let AuthSection::Postgres(pg) = &t.auth {
            out.push((format!("tenants[{i}].auth"), pg));
        }
    }
    out
}

/// The configuration's pools ([`backend_postgres::Pools`]), with errors
/// that name the section's key.
#[derive(Default)]
pub struct Pools(backend_postgres::Pools);

impl Pools {
    /// Needs the tokio runtime (the pool starts its maintenance task).
    pub fn get(&mut self, pg: &PgSection, key: &str) -> Result<PgPool, ConfigError> {
        self.0
            .get(&pg.pg_config())
            .map_err(|e| ConfigError::new(format!("{key}.url"), e))
    }
}

/// Before serving: refuses a schema that is behind, naming the key. A
/// database that does not answer does not stop the start (its tenants get
/// [SYS/TEMP] until it does, and the store checks the schema then).
pub async fn check_schemas(config: &Config) -> Result<(), Error> {
    let mut seen = HashMap::new();
    for (key, pg) in sections(config) {
        let pg_config = pg.pg_config();
        if seen.insert(pg_config.clone(), ()).is_some() {
            continue;
        }
        let pool = pg_config
            .pool()
            .map_err(|e| ConfigError::new(format!("{key}.url"), e))?;
        let checked = tokio::time::timeout(
            pg.connect_timeout + Duration::from_secs(1),
            backend_postgres::schema_status(&pool),
        )
        .await;
        pool.close().await;
        match checked {
            Ok(Ok(SchemaStatus::Current)) => {}
            Ok(Ok(ahead @ SchemaStatus::Ahead { .. })) => {
                tracing::warn!(key, database = %pg_config.describe(), "{ahead}");
            }
            Ok(Ok(behind)) => {
                return Err(
                    ConfigError::new(key, format!("{}: {behind}", pg_config.describe())).into(),
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(key, database = %pg_config.describe(), error = %e, "cannot check the PostgreSQL schema now; starting anyway");
            }
            Err(_) => {
                tracing::warn!(key, database = %pg_config.describe(), "PostgreSQL did not answer; starting anyway");
            }
        }
    }
    Ok(())
}

/// `popgate migrate`: applies the migrations to every database the
/// configuration names.
pub async fn migrate(file: Option<PathBuf>) -> Result<(), Error> {
    let config = load_checked(file.as_deref(), false)?;
    let mut done: HashMap<PgConfig, String> = HashMap::new();
    let list = sections(&config);
    if list.is_empty() {
        println!("no tenant uses PostgreSQL: nothing to migrate");
        return Ok(());
    }
    for (key, pg) in list {
        let pg_config = pg.pg_config();
        let place = pg_config.describe();
        if let Some(first) = done.get(&pg_config) {
            println!("{key}: {place}: same database as {first}");
            continue;
        }
        let applied = backend_postgres::migrate(&pg_config)
            .await
            .map_err(|e| Error::Runtime(format!("{key}: {place}: {e}")))?;
        if applied.is_empty() {
            println!("{key}: {place}: schema is current");
        } else {
            let list: Vec<String> = applied.iter().map(i64::to_string).collect();
            println!("{key}: {place}: applied migration(s) {}", list.join(", "));
        }
        done.insert(pg_config, key);
    }
    Ok(())
}

/// `popgate user ...`.
#[derive(clap::Subcommand)]
pub enum UserCmd {
    /// Add a user; the password is read from standard input.
    Add {
        #[command(flatten)]
        target: UserTarget,
        /// ARGON2ID, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT or PLAIN.
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: String,
        /// Per-user minimum seconds between logins (RFC 2449 LOGIN-DELAY).
        #[arg(long)]
        login_delay: Option<u32>,
        /// Per-user cap on concurrent sessions.
        #[arg(long)]
        max_sessions: Option<u32>,
    },
    /// Set a user's password, read from standard input.
    Passwd {
        #[command(flatten)]
        target: UserTarget,
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: String,
    },
    /// Set the user's Maildir (Dovecot's userdb `mail`); without --location, the tenant's path
    /// template again
    ///
    /// `maildir:/var/vmail/d/u/Maildir` or a bare path, below the tenant's Maildir root: a
    /// location outside it refuses the user's logins and deliveries ([SYS/TEMP]).
    Location {
        #[command(flatten)]
        target: UserTarget,
        #[arg(long)]
        location: Option<String>,
    },
    /// Disable a user: logins fail, the mail stays.
    Disable {
        #[command(flatten)]
        target: UserTarget,
    },
    /// Enable a disabled user again.
    Enable {
        #[command(flatten)]
        target: UserTarget,
    },
    /// List a tenant's users (never their passwords)
    ///
    /// One user a line, by login: the login, `enabled` or `disabled`, and the per-user
    /// `login_delay=N`, `allow_nets=...` and `location=...` when set, separated by tabs.
    List {
        #[arg(long, short, value_name = "FILE", help = crate::CONFIG_HELP)]
        config: Option<PathBuf>,
        /// The tenant, by its name in the configuration.
        #[arg(long)]
        tenant: String,
    },
    /// Delete a user from the directory; their mail stays in the store
    ///
    /// Their logins fail from then on. Only the user's row goes: their mail stays in the
    /// tenant's store (Maildir, PostgreSQL or S3), to be removed there, or found again by a
    /// user added later under the same login.
    Delete {
        #[command(flatten)]
        target: UserTarget,
    },
}

#[derive(clap::Args)]
pub struct UserTarget {
    #[arg(long, short, value_name = "FILE", help = crate::CONFIG_HELP)]
    config: Option<PathBuf>,
    /// user@domain, or a bare user name (of --tenant, or of a listener's default tenant).
    #[arg(long)]
    user: String,
    /// The tenant, when the user name does not tell it.
    #[arg(long)]
    tenant: Option<String>,
}

impl UserCmd {
    pub async fn run(self) -> Result<(), Error> {
        let (t, action) = match self {
            UserCmd::Add {
                target,
                scheme,
                login_delay,
                max_sessions,
            } => (
                target,
                UserAction::Add {
                    scheme,
                    login_delay,
                    max_sessions,
                },
            ),
            UserCmd::Passwd { target, scheme } => (target, UserAction::Passwd { scheme }),
            UserCmd::Location { target, location } => (target, UserAction::Location(location)),
            UserCmd::Disable { target } => (target, UserAction::Disable),
            UserCmd::Enable { target } => (target, UserAction::Enable),
            UserCmd::Delete { target } => (target, UserAction::Delete),
            UserCmd::List { config, tenant } => return list(config, &tenant).await,
        };
        user(t.config, t.user, t.tenant, action).await
    }
}

/// What `popgate user` does.
pub enum UserAction {
    Add {
        scheme: String,
        login_delay: Option<u32>,
        max_sessions: Option<u32>,
    },
    Passwd {
        scheme: String,
    },
    Location(Option<String>),
    Disable,
    Enable,
    Delete,
}

/// `popgate user add|passwd|disable|enable`: manages a PostgreSQL directory.
/// `user` is `local@domain` (its tenant found by the domain) or a bare
/// `local` with `tenant` (or a listener's default tenant).
pub async fn user(
    file: Option<PathBuf>,
    user: String,
    tenant: Option<String>,
    action: UserAction,
) -> Result<(), Error> {
    let config = load_checked(file.as_deref(), false)?;
    let login = user.trim().to_lowercase();
    let index = match (&tenant, login.rsplit_once('@')) {
        (Some(name), _) => config.tenants.iter().position(|t| &t.name == name),
        (None, Some((_, domain))) => config
            .tenants
            .iter()
            .position(|t| t.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))),
        (None, None) => {
            let default = config
                .listeners
                .iter()
                .find_map(|l| l.default_tenant.as_deref());
            config
                .tenants
                .iter()
                .position(|t| Some(t.name.as_str()) == default)
        }
    }
    .ok_or_else(|| {
        Error::Runtime(format!(
            "{user:?}: no tenant found (use user@domain, or --tenant NAME)"
        ))
    })?;
    let t = &config.tenants[index];
    let (pool, directory) = pg_directory(&config, index)?;
    let result = match action {
        UserAction::Add {
            scheme,
            login_delay,
            max_sessions,
        } => {
            let stored = hash_stdin(&scheme).await?;
            directory
                .add_user(&login, &stored, login_delay, max_sessions)
                .await
        }
        UserAction::Passwd { scheme } => {
            let stored = hash_stdin(&scheme).await?;
            directory.set_password(&login, &stored).await
        }
        UserAction::Location(l) => directory.set_location(&login, l.as_deref()).await,
        UserAction::Disable => directory.set_enabled(&login, false).await,
        UserAction::Enable => directory.set_enabled(&login, true).await,
        UserAction::Delete => directory.delete_user(&login).await,
    };
    pool.close().await;
    result.map_err(|e| Error::Runtime(format!("tenant {}: {e}", t.name)))?;
    println!("tenant {}: {login}: done", t.name);
    Ok(())
}

/// The directory of the tenant at `index`, which must be PostgreSQL, and
/// its pool (to close when done).
fn pg_directory(config: &Config, index: usize) -> Result<(PgPool, PgDirectory), Error> {
    let t = &config.tenants[index];
    let AuthSection::Postgres(pg) = &t.auth else {
        return Err(ConfigError::new(
            format!("tenants[{index}].auth"),
            format!(
                "tenant {:?} does not keep its users in PostgreSQL (kind = \"postgres\")",
                t.name
            ),
        )
        .into());
    };
    let pool = pg
        .pg_config()
        .pool()
        .map_err(|e| ConfigError::new(format!("tenants[{index}].auth.url"), e))?;
    let directory = PgDirectory::new(pool.clone(), t.name.clone());
    Ok((pool, directory))
}

/// `popgate user list --tenant NAME`.
async fn list(file: Option<PathBuf>, tenant: &str) -> Result<(), Error> {
    let config = load_checked(file.as_deref(), false)?;
    let index = config
        .tenants
        .iter()
        .position(|t| t.name == tenant)
        .ok_or_else(|| {
            let names: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
            Error::Runtime(format!(
                "--tenant {tenant:?}: no such tenant (the configuration has {})",
                names.join(", ")
            ))
        })?;
    let (pool, directory) = pg_directory(&config, index)?;
    let users = directory.list_users().await;
    pool.close().await;
    let users = users.map_err(|e| Error::Runtime(format!("tenant {tenant}: {e}")))?;
    let mut out = String::new();
    for u in &users {
        out.push_str(&user_line(u));
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

/// One line of `user list`.
fn user_line(u: &backend_postgres::UserEntry) -> String {
    let mut line = format!(
        "{}\t{}",
        u.login,
        if u.enabled { "enabled" } else { "disabled" }
    );
    if let Some(d) = u.login_delay {
        line.push_str(&format!("\tlogin_delay={d}"));
    }
    if let Some(nets) = &u.allow_nets {
        line.push_str(&format!("\tallow_nets={nets}"));
    }
    if let Some(location) = &u.location {
        line.push_str(&format!("\tlocation={}", location.escape_debug()));
    }
    line
}

/// Reads one line (the password) from standard input and hashes it.
async fn hash_stdin(scheme: &str) -> Result<String, Error> {
    let scheme: Scheme = scheme
        .parse()
        .map_err(|e| Error::Runtime(format!("--scheme: {e}")))?;
    let password = read_password()?;
    popgate_auth::Hashing::standalone()
        .run(move || scheme::hash(scheme, password.as_bytes()))
        .await
        .map_err(|e| Error::Runtime(e.to_string()))?
        .map_err(|e| Error::Runtime(e.to_string()))
}

/// One line from standard input, without its line ending.
pub fn read_password() -> Result<String, Error> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (echoed): ");
    }
    let mut line = String::new();
    if stdin.lock().read_line(&mut line).is_err() || line.is_empty() {
        return Err(Error::Runtime("no password on standard input".into()));
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(Error::Runtime("the password is empty".into()));
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    fn tenants(store: &str, auth: &str) -> Result<Config, Box<figment::Error>> {
        Figment::from(Toml::string(&format!(
            "[[tenants]]\nname = \"g\"\nauth = {auth}\nstore = {store}\n"
        )))
        .extract::<Config>()
        .map_err(Box::new)
    }

    #[test]
    fn postgres_sections_parse_with_defaults_and_share_pools_by_setting() {
        let pg =
            "{ kind = \"postgres\", url = \"postgres://u@db/mail\", statement_timeout = \"2s\" }";
        let c = tenants(pg, pg).unwrap();
        let list = sections(&c);
        let keys: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["tenants[0].store", "tenants[0].auth"]);
        let s = list[0].1.pg_config();
        assert_eq!(s.schema, "popgate");
        assert_eq!(s.statement_timeout, Duration::from_secs(2));
        assert_eq!(s.max_connections, 10);
        assert_eq!(s, list[1].1.pg_config(), "equal settings: one pool");
        list[0].1.validate("tenants[0].store").unwrap();
    }

    #[test]
    fn user_list_lines_are_tab_separated_without_secrets() {
        let mut u = backend_postgres::UserEntry {
            login: "bob@globex.example".into(),
            enabled: true,
            login_delay: None,
            allow_nets: None,
            location: None,
        };
        assert_eq!(user_line(&u), "bob@globex.example\tenabled");
        u.enabled = false;
        u.login_delay = Some(60);
        u.allow_nets = Some("10.0.0.0/8,::1".into());
        u.location = Some("maildir:/var/vmail/b\tob".into());
        assert_eq!(
            user_line(&u),
            "bob@globex.example\tdisabled\tlogin_delay=60\tallow_nets=10.0.0.0/8,::1\t\
             location=maildir:/var/vmail/b\\tob"
        );
    }

    #[test]
    fn postgres_errors_name_the_key() {
        let e = tenants(
            "{ kind = \"postgres\", url = \"postgres://db/x\", pool = 3 }",
            "{ kind = \"passwd-file\", path = \"/p\" }",
        )
        .unwrap_err();
        assert!(e.to_string().contains("pool"), "{e}");
        let c = tenants(
            "{ kind = \"postgres\", url = \"postgres://db/x\", max_connections = 0 }",
            "{ kind = \"passwd-file\", path = \"/p\" }",
        )
        .unwrap();
        let (key, pg) = &sections(&c)[0];
        assert_eq!(
            pg.validate(key).unwrap_err().key,
            "tenants[0].store.max_connections"
        );
        let c = tenants(
            "{ kind = \"maildir\", path = \"/m/%n\" }",
            "{ kind = \"postgres\", url = \"redis://x\" }",
        )
        .unwrap();
        let (key, pg) = &sections(&c)[0];
        assert_eq!(pg.validate(key).unwrap_err().key, "tenants[0].auth.url");
    }
}
