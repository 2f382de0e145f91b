//! popgate: a multi-tenant POP3 gateway. This binary reads the
//! configuration, wires the concrete backends behind the seams, and serves.

mod admin;
mod admin_cli;
mod config;
#[cfg(feature = "maildir")]
mod from_dovecot;
mod migrate;
#[cfg(feature = "postgres")]
mod pg;
mod reload;
mod rlimit;
mod wiring;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// `popgate --version`: the version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("POPGATE_COMMIT"),
    ")"
);

/// The help of every `--config`.
pub(crate) const CONFIG_HELP: &str = "The configuration file (TOML). Without it: the file named by \
     POPGATE_CONFIG, else the embedded default (./data, 127.0.0.1:1100). \
     POPGATE_<SECTION>__<KEY> variables override its keys";

#[derive(Parser)]
#[command(name = "popgate", version = VERSION, about = "A multi-tenant POP3 gateway")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Probe a running popgate's health endpoint; exit 0 when it answers 200.
    /// For container HEALTHCHECKs, where there is no shell or curl.
    Healthcheck {
        /// The endpoint: /healthz (alive) or /readyz (ready for traffic).
        #[arg(long, default_value = "http://127.0.0.1:9100/healthz")]
        url: String,
    },
    /// Serve POP3. Without --config: the embedded default (./data, 127.0.0.1:1100).
    Serve {
        #[arg(long, short, value_name = "FILE", help = CONFIG_HELP)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration and exit: 0 if it is good, 2 with the key at fault if not.
    CheckConfig {
        #[arg(long, short, value_name = "FILE", help = CONFIG_HELP)]
        config: Option<PathBuf>,
    },
    /// Append the message on standard input to a user's mailbox, through the tenant's store.
    /// Exits 0 when delivered, 67 (EX_NOUSER) when the tenant's directory does not know the
    /// user, 75 (EX_TEMPFAIL) for anything that may pass (store or directory down, bad
    /// config): an MTA keeps the message queued and retries.
    Deliver {
        #[arg(long, short, value_name = "FILE", help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// The recipient, user@domain (or a bare user of a listener's default tenant).
        #[arg(long)]
        user: String,
    },
    #[cfg(feature = "postgres")]
    /// Apply the database migrations to every PostgreSQL store and directory of the configuration.
    Migrate {
        #[arg(long, short, value_name = "FILE", help = CONFIG_HELP)]
        config: Option<PathBuf>,
    },
    #[cfg(feature = "postgres")]
    /// Manage the users of a tenant whose directory is PostgreSQL: add, passwd (password on
    /// standard input), disable, enable, list, delete.
    User {
        #[command(subcommand)]
        command: pg::UserCmd,
    },
    /// Move mailboxes from the stores of OLD.toml (or a live POP3 server) to the stores of
    /// NEW.toml, keeping every message's UIDL, bytes, size and order; each mailbox under its
    /// lock, verified before it counts as done. Idempotent and resumable. Exits non-zero and
    /// lists the mailboxes that failed.
    MigrateMail(migrate::MigrateMail),
    /// Hash a password (read from standard input) for a passwd-file.
    Pw {
        /// ARGON2ID, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT or PLAIN; for the tools of old
        /// installations also MD5-CRYPT, SSHA, SSHA256, SSHA512, SMD5, PLAIN-MD5, LDAP-MD5, SHA,
        /// SHA256, SHA512 (weak: one fast hash; popgate warns).
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: String,
    },
    /// List the live sessions of the whole fleet (of one replica with in-memory locks):
    /// replica, host, tenant, login, client, since when, bytes sent. Asks a replica's
    /// metrics port (`metrics.address`), with `metrics.bearer_token`. Exits 0, 1 when the
    /// replica cannot be reached, 3 when it refuses the token, 4 when some replicas could
    /// not be listed.
    Who {
        #[command(flatten)]
        target: admin_cli::Target,
        /// Only the sessions of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only the sessions of this login (user@domain).
        #[arg(long)]
        user: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End the live sessions of a login or a tenant on whichever replica holds them: the
    /// client gets `-ERR [SYS/TEMP]`, nothing is deleted, the mailbox lock is freed.
    /// Exit statuses as for `who`.
    Kick {
        #[command(flatten)]
        target: admin_cli::Target,
        /// The tenant whose sessions end (with --user: that login's in this tenant).
        #[arg(long, required_unless_present = "user")]
        tenant: Option<String>,
        /// The login whose sessions end (user@domain).
        #[arg(long)]
        user: Option<String>,
    },
    #[cfg(feature = "maildir")]
    /// Print the popgate.toml equivalent to a Dovecot configuration; what does not map is listed
    /// in comments and on standard error (exit 3 when users or mail did not map).
    FromDovecot {
        /// Dovecot's configuration directory (dovecot.conf, and relative !include and args paths).
        #[arg(long, value_name = "DIR", default_value = "/etc/dovecot")]
        config_dir: PathBuf,
        /// Read `doveconf -n` output from FILE ("-": standard input) instead of dovecot.conf.
        #[arg(long, value_name = "FILE")]
        doveconf_output: Option<PathBuf>,
        /// A mail domain of the tenant (repeatable); default: the domains of passwd-file logins.
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        /// The tenant's name.
        #[arg(long, default_value = "dovecot")]
        tenant: String,
    },
    /// Print a shell completion script: `popgate completions bash > /etc/bash_completion.d/popgate`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `popgate man > popgate.1`; with --dir, write the pages of
    /// popgate and of every subcommand there (popgate.1, popgate-serve.1, ...).
    Man {
        /// A directory to write every page to, instead of printing popgate(1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve { config } => run(|| wiring::serve(config)),
        Cmd::CheckConfig { config } => match wiring::check(config.as_deref()) {
            Ok(_) => {
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("popgate: configuration error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Deliver { config, user } => deliver(config, user),
        #[cfg(feature = "postgres")]
        Cmd::Migrate { config } => run(|| pg::migrate(config)),
        #[cfg(feature = "postgres")]
        Cmd::User { command } => run(|| command.run()),
        Cmd::MigrateMail(args) => run(|| args.run()),
        Cmd::Pw { scheme } => pw(&scheme),
        #[cfg(feature = "maildir")]
        Cmd::FromDovecot {
            config_dir,
            doveconf_output,
            domains,
            tenant,
        } => from_dovecot::run(from_dovecot::Args {
            config_dir,
            doveconf_output,
            domains,
            tenant,
        }),
        Cmd::Completions { shell } => {
            // Into memory first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "popgate", &mut script);
            print_bytes(&script)
        }
        Cmd::Man { dir: Some(dir) } => match clap_mangen::generate_to(Cli::command(), &dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("popgate: {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
        Cmd::Man { dir: None } => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => print_bytes(&page),
                Err(e) => {
                    eprintln!("popgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Who {
            target,
            tenant,
            user,
            json,
        } => admin_cli::who(&target, tenant, user, json),
        Cmd::Kick {
            target,
            tenant,
            user,
        } => admin_cli::kick(&target, tenant, user),
        Cmd::Healthcheck { url } => match healthcheck(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("popgate: unhealthy: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Writes generated text to standard output; a closed pipe is no panic.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an async command on a multi-threaded runtime; errors go to stderr.
fn run<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), wiring::Error>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("popgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popgate: {e}");
            e.exit_code()
        }
    }
}

/// `deliver` exits with sysexits codes (see [`wiring::sysexits`]), also when
/// the runtime cannot start.
fn deliver(config: Option<PathBuf>, user: String) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| wiring::DeliverError {
            message: format!("cannot start the runtime: {e}"),
            status: wiring::sysexits::TEMPFAIL,
        })
        .and_then(|rt| rt.block_on(wiring::deliver(config, user)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popgate: {e}");
            ExitCode::from(e.status)
        }
    }
}

fn pw(scheme: &str) -> ExitCode {
    use popgate_auth::scheme::Scheme;
    let scheme = match scheme.parse::<Scheme>() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("popgate: {e}");
            return ExitCode::from(2);
        }
    };
    if !matches!(
        scheme,
        Scheme::Argon2id
            | Scheme::Argon2i
            | Scheme::BlfCrypt
            | Scheme::Sha512Crypt
            | Scheme::Sha256Crypt
            | Scheme::Crypt
            | Scheme::Plain
    ) {
        eprintln!(
            "popgate: warning: {scheme} is a fast hash that a stolen database gives up quickly; use it only where an old tool needs it"
        );
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (echoed): ");
    }
    let mut line = String::new();
    if stdin.lock().read_line(&mut line).is_err() || line.is_empty() {
        eprintln!("popgate: no password on standard input");
        return ExitCode::from(2);
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    match popgate_auth::scheme::hash(scheme, password.as_bytes()) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("popgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// GETs `http://host:port/path`; Ok on a 200.
fn healthcheck(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    match admin_cli::request(url, "GET", path, None)? {
        (200, _) => Ok(()),
        (status, body) => Err(format!("{url} answered {status}: {}", body.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_config_flag_has_the_same_help() {
        fn walk(cmd: &clap::Command, found: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_id() == "config" {
                    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                    assert!(
                        help.contains("POPGATE_CONFIG"),
                        "{}: {help}",
                        cmd.get_name()
                    );
                    found.push(cmd.get_name().to_string());
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, found);
            }
        }
        let mut found = Vec::new();
        walk(&Cli::command(), &mut found);
        let mut names = vec!["serve", "check-config", "deliver", "who", "kick"];
        // `migrate` and `user ...` exist with PostgreSQL only.
        if cfg!(feature = "postgres") {
            names.extend(["migrate", "add", "list", "delete"]);
        }
        for name in names {
            assert!(
                found.iter().any(|f| f == name),
                "{name} has no --config: {found:?}"
            );
        }
    }

    #[test]
    fn the_version_names_a_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        let commit = VERSION
            .split_once("(commit ")
            .and_then(|(_, c)| c.strip_suffix(')'))
            .unwrap();
        assert!(!commit.is_empty() && !commit.contains(' '), "{VERSION}");
    }
}
