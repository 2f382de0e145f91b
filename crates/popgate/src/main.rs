//! popgate: a multi-tenant POP3 gateway. This binary reads the
//! configuration, wires the concrete backends behind the seams, and serves.

mod config;
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
        /// ARGON2ID, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT or PLAIN.
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: String,
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
    let scheme = match scheme.parse::<popgate_auth::scheme::Scheme>() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("popgate: {e}");
            return ExitCode::from(2);
        }
    };
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

/// GETs `http://host:port/path` with a 3 s budget; Ok on a 200.
fn healthcheck(url: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let timeout = Duration::from_secs(3);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "{url} answered {:?}",
            status_line.lines().next().unwrap_or("")
        ))
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
        let mut names = vec!["serve", "check-config", "deliver"];
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
