//! `popgate migrate-mail`: moves mailboxes from the stores of one
//! configuration (or a live POP3 server) to the stores of another, keeping
//! every message's UIDL, bytes, POP3 size and order, so that no client
//! downloads anything twice. See docs/migration.md.

mod copy;
mod digest;
mod pop3;
mod progress;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use popgate_auth::ListError;
use popgate_lock::MailboxLocks;
use popgate_server::{Tenant, Tenants};
use popgate_store::{MailStore, MailboxId};

use crate::config::Config;
use crate::wiring::{self, Error};
use copy::{Job, Options, Outcome};
use progress::Progress;

/// How long the first retry of a mailbox in use waits; it doubles each round.
const FIRST_RETRY_WAIT: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["user", "tenant", "all"])))]
pub struct MigrateMail {
    /// The old configuration, whose stores are read; or a live POP3 server,
    /// pop3://HOST:PORT, with --passwords or --master-user.
    #[arg(long, value_name = "OLD.toml|pop3://HOST:PORT")]
    from: String,
    /// The new configuration, whose stores receive the mail.
    #[arg(long, value_name = "NEW.toml")]
    to: PathBuf,
    /// One mailbox: user@domain (or a bare user of a listener's default tenant).
    #[arg(long, value_name = "LOGIN")]
    user: Option<String>,
    /// Every user of this tenant's directory (of the passwords file for a POP3 source).
    #[arg(long, value_name = "T")]
    tenant: Option<String>,
    /// Every user of every tenant both configurations define.
    #[arg(long)]
    all: bool,
    /// Say what would be copied; write and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Delete each mailbox's messages from the source once all are copied and verified.
    #[arg(long)]
    delete_source: bool,
    /// Mailboxes moved at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,
    /// Rounds of retries for mailboxes in use by a session (2 s, 4 s, 8 s ... apart).
    #[arg(long, default_value_t = 3)]
    in_use_retries: u32,
    /// POP3 source: a file of `login:password` lines (the logins --tenant and --all take).
    #[arg(long, value_name = "FILE")]
    passwords: Option<PathBuf>,
    /// POP3 source: log in as `login*MASTER` (Dovecot's master users) with this master
    /// user's password, read from --master-password-file.
    #[arg(long, value_name = "MASTER", requires = "master_password_file")]
    master_user: Option<String>,
    #[arg(long, value_name = "FILE")]
    master_password_file: Option<PathBuf>,
}

/// The source side: another configuration's tenants, or a POP3 server.
enum From {
    Config {
        tenants: Tenants,
        default_tenant: Option<String>,
        locks: Arc<dyn MailboxLocks>,
    },
    Pop3(Arc<pop3::Pop3Source>),
}

struct Dest {
    tenants: Tenants,
    default_tenant: Option<String>,
    locks: Arc<dyn MailboxLocks>,
}

fn default_tenant(config: &Config) -> Option<String> {
    config
        .listeners
        .iter()
        .find_map(|l| l.default_tenant.clone())
}

fn load(path: &std::path::Path) -> Result<(Config, Tenants, Arc<dyn MailboxLocks>), Error> {
    // A bad file is a configuration error (exit 2) that names the file.
    let named = |e: crate::config::ConfigError| {
        Error::Config(crate::config::ConfigError::new(
            path.display().to_string(),
            e.to_string(),
        ))
    };
    let config = wiring::load_checked(Some(path), false).map_err(named)?;
    let hashing = popgate_auth::HashPool::new(config.server.password_hashing.pool_config());
    let tenants = wiring::build_tenants(&config, &hashing).map_err(named)?;
    let (locks, _, _) =
        wiring::build_coordination(&config, &popgate_server::SessionRegistry::new())
            .map_err(named)?;
    Ok((config, tenants, locks))
}

impl MigrateMail {
    pub async fn run(self) -> Result<(), Error> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("POPGATE_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
        let (to_config, to_tenants, to_locks) = load(&self.to)?;
        let dest = Dest {
            default_tenant: default_tenant(&to_config),
            tenants: to_tenants,
            locks: to_locks,
        };
        let from = if self.from.starts_with("pop3://") {
            From::Pop3(Arc::new(pop3::Pop3Source::new(
                &self.from,
                self.passwords.as_deref(),
                self.master_user.as_deref(),
                self.master_password_file.as_deref(),
            )?))
        } else {
            if self.passwords.is_some() || self.master_user.is_some() {
                return Err(Error::Runtime(
                    "--passwords and --master-user are for a pop3:// source".into(),
                ));
            }
            let (config, tenants, locks) = load(std::path::Path::new(&self.from))?;
            if matches!(config.locks.backend, crate::config::LockBackend::Memory) {
                tracing::warn!(
                    "{}: locks are in-process (locks.backend = \"memory\"): migrate-mail cannot see \
                     the sessions of a running popgate; stop it or use Redis locks",
                    self.from
                );
            }
            From::Config {
                default_tenant: default_tenant(&config),
                tenants,
                locks,
            }
        };
        let (jobs, mut failed) = self.jobs_for(&from, &dest).await?;
        let opts = Options {
            dry_run: self.dry_run,
            delete_source: self.delete_source,
        };
        let progress = Arc::new(Progress::new(jobs.len() as u64 + failed.len() as u64));
        {
            let progress = progress.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    progress.stopping.store(true, Ordering::Relaxed);
                    progress.note(
                        "migrate-mail: interrupted: finishing the messages at hand (Ctrl-C again to stop at once)",
                    );
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(130);
                    }
                }
            });
        }
        for (label, why) in &failed {
            progress.mailbox_done(&format!("migrate-mail: {label}: FAILED: {why}"));
        }

        let mut totals = copy::Stats::default();
        let (mut done, mut interrupted) = (0usize, 0usize);
        let mut pending: Vec<Job> = jobs;
        let mut round = 0u32;
        while !pending.is_empty() {
            let last_round = round >= self.in_use_retries;
            let results: Vec<(Job, Outcome)> = futures_util::stream::iter(pending)
                .map(|job| {
                    let progress = progress.clone();
                    async move {
                        let outcome = copy::run(&job, opts, &progress).await;
                        (job, outcome)
                    }
                })
                .buffer_unordered(usize::from(self.jobs))
                .collect()
                .await;
            pending = Vec::new();
            for (job, outcome) in results {
                let label = &job.label;
                match outcome {
                    Outcome::Done(s) => {
                        done += 1;
                        totals.messages += s.messages;
                        totals.copied += s.copied;
                        totals.present += s.present;
                        totals.bytes += s.bytes;
                        totals.deleted += s.deleted;
                        let verb = if self.dry_run { "would copy" } else { "copied" };
                        let mut line = format!(
                            "migrate-mail: {label}: {} messages: {verb} {} ({} octets), {} there already",
                            s.messages, s.copied, s.bytes, s.present
                        );
                        if !self.dry_run {
                            line.push_str(", all verified");
                        }
                        if self.delete_source && !self.dry_run {
                            line.push_str(&format!(", {} deleted from the source", s.deleted));
                        }
                        progress.mailbox_done(&line);
                    }
                    Outcome::InUse(why)
                        if !last_round && !progress.stopping.load(Ordering::Relaxed) =>
                    {
                        progress.note(&format!("migrate-mail: {label}: {why}; trying again later"));
                        pending.push(job);
                    }
                    Outcome::InUse(why) => {
                        progress.mailbox_done(&format!("migrate-mail: {label}: FAILED: {why}"));
                        failed.push((label.clone(), why));
                    }
                    Outcome::Interrupted => {
                        interrupted += 1;
                        progress.mailbox_done(&format!(
                            "migrate-mail: {label}: interrupted (what was copied is kept; run again to go on)"
                        ));
                    }
                    Outcome::Failed(why) => {
                        progress.mailbox_done(&format!("migrate-mail: {label}: FAILED: {why}"));
                        failed.push((label.clone(), why));
                    }
                }
            }
            if !pending.is_empty() {
                let wait = FIRST_RETRY_WAIT * 2u32.saturating_pow(round);
                round += 1;
                tokio::time::sleep(wait).await;
            }
        }
        progress.finish();
        let (mps, mbps) = progress.rates();
        let verb = if self.dry_run { "would copy" } else { "copied" };
        eprintln!(
            "migrate-mail: {done} mailboxes done, {} failed, {interrupted} interrupted; {} messages: {verb} {} ({:.1} MB), {} there already, {} deleted from the source; {:.1} s, {mps:.0} messages/s, {mbps:.1} MB/s",
            failed.len(),
            totals.messages,
            totals.copied,
            totals.bytes as f64 / 1e6,
            totals.present,
            totals.deleted,
            progress.elapsed().as_secs_f64(),
        );
        if !failed.is_empty() {
            eprintln!("migrate-mail: failed mailboxes:");
            for (label, why) in &failed {
                eprintln!("  {label}: {why}");
            }
            return Err(Error::Runtime(format!("{} mailboxes failed", failed.len())));
        }
        if interrupted > 0 {
            return Err(Error::Runtime(format!(
                "interrupted: {interrupted} mailboxes not finished; run again to go on"
            )));
        }
        Ok(())
    }

    /// The mailboxes to move, and the ones that cannot even start (a login
    /// that is no mailbox of its tenant), each with its reason.
    async fn jobs_for(
        &self,
        from: &From,
        dest: &Dest,
    ) -> Result<(Vec<Job>, Vec<(String, String)>), Error> {
        // Tenant name -> logins.
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let source_tenants = match from {
            From::Config { tenants, .. } => Some(tenants),
            From::Pop3(_) => None,
        };
        let naming = source_tenants.unwrap_or(&dest.tenants);
        if let Some(user) = &self.user {
            let default = match from {
                From::Config { default_tenant, .. } => default_tenant.as_deref(),
                From::Pop3(_) => dest.default_tenant.as_deref(),
            };
            let (tenant, mailbox) = naming.resolve(user, default).ok_or_else(|| {
                Error::Runtime(format!(
                    "--user {user}: no tenant of the configuration serves this login"
                ))
            })?;
            wanted
                .entry(tenant.name.clone())
                .or_default()
                .push(mailbox.login());
        } else {
            let names: Vec<String> = match &self.tenant {
                Some(t) => vec![t.clone()],
                None => naming.iter().map(|t| t.name.clone()).collect(),
            };
            for name in names {
                let Some(tenant) = naming.get(&name) else {
                    return Err(Error::Runtime(format!(
                        "--tenant {name}: no such tenant in {}",
                        self.from
                    )));
                };
                if dest.tenants.get(&name).is_none() {
                    if self.tenant.is_some() {
                        return Err(Error::Runtime(format!(
                            "--tenant {name}: {} defines no tenant of that name",
                            self.to.display()
                        )));
                    }
                    continue; // --all: the tenants both define.
                }
                let logins = match from {
                    From::Config { .. } => {
                        tenant.directory.list_logins().await.map_err(|e| match e {
                            ListError::Unsupported(why) => Error::Runtime(format!(
                                "tenant {name}: {why} (or move its mailboxes with --user)"
                            )),
                            ListError::Unavailable(e) => {
                                Error::Runtime(format!("tenant {name}: listing its users: {e}"))
                            }
                        })?
                    }
                    From::Pop3(p) => p
                        .logins()
                        .into_iter()
                        .filter(|l| {
                            dest.tenants
                                .resolve(l, dest.default_tenant.as_deref())
                                .is_some_and(|(t, _)| t.name == name)
                        })
                        .collect(),
                };
                wanted.insert(name, logins);
            }
        }

        let mut jobs = Vec::new();
        let mut failed = Vec::new();
        for (name, logins) in wanted {
            let dest_tenant = dest.tenants.get(&name).ok_or_else(|| {
                Error::Runtime(format!("{}: no tenant {name}", self.to.display()))
            })?;
            for login in logins {
                let label = format!("{name}/{login}");
                let Some(mailbox) = mailbox_of(dest_tenant, &login) else {
                    failed.push((label, "not a valid mailbox name of the tenant".into()));
                    continue;
                };
                let (source, source_locks): (Arc<dyn MailStore>, _) = match from {
                    From::Config { tenants, locks, .. } => match tenants.get(&name) {
                        Some(t) => (t.store.clone(), Some(locks.clone())),
                        None => {
                            failed.push((label, format!("{} has no tenant {name}", self.from)));
                            continue;
                        }
                    },
                    From::Pop3(p) => (p.clone(), None),
                };
                jobs.push(Job {
                    label: format!("{name}/{}", mailbox.login()),
                    source,
                    source_mailbox: mailbox.clone(),
                    source_locks,
                    dest: dest_tenant.store.clone(),
                    dest_mailbox: mailbox,
                    dest_locks: dest.locks.clone(),
                });
            }
        }
        Ok((jobs, failed))
    }
}

/// The mailbox of a directory's login (`local@domain`, or a bare `local`
/// in the tenant's primary domain); `None` if it is not one of the tenant's.
fn mailbox_of(tenant: &Arc<Tenant>, login: &str) -> Option<MailboxId> {
    let primary = tenant.domains.first().cloned().unwrap_or_default();
    tenant.mailbox_named(login, &MailboxId::new(tenant.name.clone(), "", primary))
}
