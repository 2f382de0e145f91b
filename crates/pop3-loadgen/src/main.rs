//! pop3-loadgen: a small POP3 load generator, for benchmarking popgate
//! against other POP3 servers on the same machine.
//!
//! It connects only to a loopback address, and always stops by itself: after
//! `--sessions` sessions or `--duration`, whichever comes first (a session in
//! flight then gets `--session-timeout` to finish). It never deletes mail, so
//! several servers can share one copy of the mailboxes.
//!
//! Every worker keeps to its own slice of the user list (worker w takes users
//! w, w+C, w+2C, ...), so two sessions never share a mailbox at once: servers
//! that lock mailboxes (popgate) and servers that don't see the same load.

mod client;
mod stats;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use client::{Error, ErrorKind, Mode, SessionSpec};
use stats::{Report, Sample};

#[derive(Parser, Debug)]
#[command(
    name = "pop3-loadgen",
    version,
    about = "A POP3 load generator (loopback only)"
)]
struct Args {
    /// The server's address: a loopback IP (127.0.0.0/8 or ::1), nothing else.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The server's port.
    #[arg(long)]
    port: u16,
    /// A file of logins, one a line: `login` or `login:password`.
    #[arg(long, conflicts_with = "user_pattern")]
    users_file: Option<PathBuf>,
    /// A login pattern: `%d` (or `%04d`, ...) becomes each number of --user-range.
    #[arg(long)]
    user_pattern: Option<String>,
    /// The numbers for --user-pattern, `FIRST-LAST` (inclusive).
    #[arg(long, default_value = "1-1")]
    user_range: String,
    /// The password of logins that have none of their own.
    #[arg(long, default_value = "")]
    password: String,
    /// Sessions run at once.
    #[arg(long, short, default_value_t = 1)]
    concurrency: usize,
    /// Stop after this many sessions in all (default: no count, only --duration).
    #[arg(long, short = 'n')]
    sessions: Option<u64>,
    /// Stop starting sessions after this long: 500ms, 10s, 2m (idle: the most the logins may take).
    #[arg(long, short, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// login: USER/PASS, STAT, QUIT. full: also UIDL, LIST, RETR each message.
    /// idle: log in --concurrency sessions, hold them --hold, QUIT.
    #[arg(long, short, value_enum, default_value = "full")]
    mode: Mode,
    /// full: RETR only the first N messages of each mailbox.
    #[arg(long)]
    retr: Option<u32>,
    /// Send USER and PASS in one write (RFC 2449 PIPELINING).
    #[arg(long)]
    pipeline: bool,
    /// idle: how long to hold the sessions once all are logged in.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    hold: Duration,
    /// idle: hold the sessions until stdin closes instead (a benchmark
    /// measures meanwhile, then closes the pipe).
    #[arg(long, conflicts_with = "hold")]
    hold_stdin: bool,
    /// idle: logins in flight at once while opening the sessions.
    #[arg(long, default_value_t = 32)]
    ramp: usize,
    /// Check every Nth retrieved message's octets against its LIST size (0: never).
    #[arg(long, default_value_t = 1)]
    verify_every: u64,
    /// Longest wait for any single read or write.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Longest a single session may take.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    session_timeout: Duration,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the result as one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

/// Expands `%d` / `%0Nd` in `pattern` with `n`.
fn expand_pattern(pattern: &str, n: u64) -> Result<String, String> {
    let start = pattern.find('%').ok_or("--user-pattern needs a %d")?;
    let rest = &pattern[start + 1..];
    let end = rest
        .find('d')
        .ok_or("--user-pattern: % must be followed by d or 0Nd")?;
    let spec = &rest[..end];
    let width = if spec.is_empty() {
        0
    } else if spec.starts_with('0') && spec.bytes().all(|b| b.is_ascii_digit()) {
        spec.parse::<usize>().map_err(|e| e.to_string())?
    } else {
        return Err(format!("--user-pattern: unsupported %{spec}d"));
    };
    Ok(format!(
        "{}{:0width$}{}",
        &pattern[..start],
        n,
        &rest[end + 1..]
    ))
}

fn users(args: &Args) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    if let Some(path) = &args.users_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match line.split_once(':') {
                Some((user, pass)) => out.push((user.to_string(), pass.to_string())),
                None => out.push((line.to_string(), args.password.clone())),
            }
        }
    } else if let Some(pattern) = &args.user_pattern {
        let (a, b) = args
            .user_range
            .split_once('-')
            .ok_or("--user-range wants FIRST-LAST")?;
        let (a, b): (u64, u64) = (
            a.parse().map_err(|_| "--user-range: bad FIRST")?,
            b.parse().map_err(|_| "--user-range: bad LAST")?,
        );
        if a > b || b - a >= 1_000_000 {
            return Err("--user-range: FIRST must be <= LAST, at most a million users".into());
        }
        for n in a..=b {
            out.push((expand_pattern(pattern, n)?, args.password.clone()));
        }
    } else {
        return Err("give --users-file or --user-pattern".into());
    }
    if out.is_empty() {
        return Err("the user list is empty".into());
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.host.is_loopback() {
        eprintln!(
            "pop3-loadgen: {} is not a loopback address; this tool only loads servers on this machine",
            args.host
        );
        return ExitCode::from(2);
    }
    let users = match users(&args) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("pop3-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if args.concurrency == 0 || args.threads == 0 || args.ramp == 0 {
        eprintln!("pop3-loadgen: --concurrency, --threads and --ramp must be at least 1");
        return ExitCode::from(2);
    }
    if args.concurrency > users.len() {
        eprintln!(
            "pop3-loadgen: --concurrency {} exceeds the {} users: sessions would share mailboxes",
            args.concurrency,
            users.len()
        );
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pop3-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = rt.block_on(run(args.clone_settings(), users));
    let out = if args.json {
        report.json()
    } else {
        report.text()
    };
    println!("{}", out.trim_end());
    if report.sample.error_count() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The settings the async part needs.
#[derive(Clone)]
struct Settings {
    addr: SocketAddr,
    concurrency: usize,
    sessions: u64,
    duration: Duration,
    hold: Duration,
    hold_stdin: bool,
    ramp: usize,
    session_timeout: Duration,
    spec: SessionSpec,
}

impl Args {
    fn clone_settings(&self) -> Settings {
        Settings {
            addr: SocketAddr::new(self.host, self.port),
            concurrency: self.concurrency,
            sessions: self.sessions.unwrap_or(u64::MAX),
            duration: self.duration,
            hold: self.hold,
            hold_stdin: self.hold_stdin,
            ramp: self.ramp,
            session_timeout: self.session_timeout,
            spec: SessionSpec {
                mode: self.mode,
                pipeline: self.pipeline,
                retr_limit: self.retr.unwrap_or(u32::MAX),
                verify_every: self.verify_every,
                io_timeout: self.timeout,
            },
        }
    }
}

async fn run(s: Settings, users: Vec<(String, String)>) -> Report {
    match s.spec.mode {
        Mode::Idle => run_idle(s, users).await,
        _ => run_load(s, users).await,
    }
}

/// Login and Full: C workers run sessions back to back until the count or
/// the duration is reached.
async fn run_load(s: Settings, users: Vec<(String, String)>) -> Report {
    let users = Arc::new(users);
    let started = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let deadline = begin + s.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..s.concurrency {
        let users = users.clone();
        let started = started.clone();
        let s = s.clone();
        tasks.spawn(async move {
            let mine: Vec<usize> = (w..users.len()).step_by(s.concurrency).collect();
            let mut sample = Sample::default();
            let mut k = 0usize;
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < s.sessions
            {
                let (user, pass) = &users[mine[k % mine.len()]];
                k += 1;
                let result = tokio::time::timeout(
                    s.session_timeout,
                    client::session(s.addr, user, pass, &s.spec, &mut sample),
                )
                .await
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, "session timed out")));
                match result {
                    Ok(()) => sample.sessions_ok += 1,
                    Err(e) => {
                        sample.sessions_failed += 1;
                        sample.error(e);
                    }
                }
            }
            sample
        });
    }
    let mut total = Sample::default();
    // Every session is bounded by session_timeout, so this ends; the outer
    // timeout is a last resort against a bug here.
    let hard_stop = s.duration + s.session_timeout + Duration::from_secs(5);
    let _ = tokio::time::timeout(hard_stop, async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(sample) = r {
                total.merge(sample);
            }
        }
    })
    .await;
    tasks.abort_all();
    Report {
        mode: if s.spec.mode == Mode::Login {
            "login"
        } else {
            "full"
        },
        concurrency: s.concurrency,
        elapsed: begin.elapsed(),
        sample: total,
        held: None,
    }
}

/// Idle: log in `concurrency` sessions (users 1..C), print `READY ok=N
/// failed=M` on stdout once every login has finished, hold them all for
/// `hold` (or until stdin closes), then QUIT each.
async fn run_idle(s: Settings, users: Vec<(String, String)>) -> Report {
    let begin = Instant::now();
    let ramp = Arc::new(tokio::sync::Semaphore::new(s.ramp));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(s.concurrency);
    let mut tasks = tokio::task::JoinSet::new();
    for (user, pass) in users.into_iter().take(s.concurrency) {
        let ramp = ramp.clone();
        let mut release = release_rx.clone();
        let ready = ready_tx.clone();
        let s = s.clone();
        tasks.spawn(async move {
            let mut sample = Sample::default();
            let opened = async {
                let _permit = ramp.acquire().await.expect("semaphore stays open");
                let (mut c, login_time) = client::login(s.addr, &user, &pass, &s.spec).await?;
                client::stat(&mut c).await?;
                Ok::<_, Error>((c, login_time))
            };
            let opened = tokio::time::timeout(s.session_timeout, opened)
                .await
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, "login timed out")));
            let mut c = match opened {
                Ok((c, t)) => {
                    sample.login_us.push(client::micros(t));
                    let _ = ready.send(true).await;
                    c
                }
                Err(e) => {
                    let _ = ready.send(false).await;
                    sample.sessions_failed += 1;
                    sample.error(e);
                    return sample;
                }
            };
            let _ = release.wait_for(|&r| r).await;
            match client::quit(&mut c).await {
                Ok(()) => sample.sessions_ok += 1,
                Err(e) => {
                    sample.sessions_failed += 1;
                    sample.error(e);
                }
            }
            sample
        });
    }
    drop(ready_tx);
    let (mut ok, mut failed) = (0u64, 0u64);
    let expected = tasks.len() as u64;
    // Every login reports once (bounded by --session-timeout); --duration
    // bounds the whole opening phase too.
    let all_in = async {
        while ok + failed < expected {
            match ready_rx.recv().await {
                Some(true) => ok += 1,
                Some(false) => failed += 1,
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(s.duration, all_in).await;
    println!("READY ok={ok} failed={failed}");
    let _ = std::io::stdout().flush();
    if s.hold_stdin {
        stdin_closed().await;
    } else {
        tokio::time::sleep(s.hold).await;
    }
    let _ = release_tx.send(true);
    let mut total = Sample::default();
    let _ = tokio::time::timeout(s.session_timeout + Duration::from_secs(5), async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(sample) = r {
                total.merge(sample);
            }
        }
    })
    .await;
    tasks.abort_all();
    Report {
        mode: "idle",
        concurrency: s.concurrency,
        elapsed: begin.elapsed(),
        sample: total,
        held: Some(ok),
    }
}

/// Resolves when stdin reaches its end (or fails).
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
    });
    let _ = rx.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(
            expand_pattern("u%04d@bench.test", 7).unwrap(),
            "u0007@bench.test"
        );
        assert_eq!(expand_pattern("user%d", 12).unwrap(), "user12");
        assert!(expand_pattern("nobody", 1).is_err());
        assert!(expand_pattern("u%xd", 1).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
    }
}
