//! pop3-canned: a POP3 server that touches no storage, to measure the
//! ceiling: what this machine and the load generator allow when the server
//! does nothing but answer.
//!
//! At start it reads the maildrops it serves (`--maildrop [PREFIX=]DIR`:
//! the regular files of a Maildir's `cur/` and `new/`), and encodes every
//! message once as RETR sends it: CRLF line endings, dot-stuffed, the
//! `+OK` line and the terminator included. From then on it reads no file.
//! Any USER and PASS log in; a login gets the maildrop of the first
//! `--maildrop` whose PREFIX it starts with (one without PREFIX serves the
//! others). STAT, LIST, UIDL, RETR, TOP (the whole message), NOOP, RSET,
//! DELE (marks nothing) and QUIT are answered from memory, with replies to
//! pipelined commands in one write.
//!
//! It runs on the runtime popgate uses (tokio, multi-threaded, a worker per
//! CPU, a task per connection, TCP_NODELAY), and listens on loopback only:
//! it accepts any password.

mod maildrop;
mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use maildrop::{Drops, Maildrop};

#[derive(Parser, Debug)]
#[command(
    name = "pop3-canned",
    version,
    about = "A POP3 server answering from memory (the ceiling for benchmarks; loopback only)"
)]
struct Args {
    /// Where to listen: a loopback address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A maildrop: `DIR` or `PREFIX=DIR`, DIR a Maildir (its cur/ and new/
    /// are read at start). Logins starting with PREFIX get it; one without
    /// PREFIX serves every other login. Repeatable.
    #[arg(long, required = true)]
    maildrop: Vec<String>,
    /// Runtime worker threads (default: one per CPU, as popgate).
    #[arg(long)]
    threads: Option<usize>,
}

fn load(specs: &[String]) -> Result<Drops, String> {
    let mut drops = Drops::default();
    for spec in specs {
        let (prefix, dir) = match spec.split_once('=') {
            Some((p, d)) => (Some(p.to_string()), d),
            None => (None, spec.as_str()),
        };
        let drop = Maildrop::read(&PathBuf::from(dir))?;
        drops.add(prefix, drop);
    }
    Ok(drops)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!("pop3-canned: {} is not a loopback address", args.listen);
        return ExitCode::from(2);
    }
    let drops = match load(&args.maildrop) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("pop3-canned: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pop3-canned: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args.listen, drops)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pop3-canned: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: SocketAddr, drops: Arc<Drops>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    eprintln!("pop3-canned: {} on {local}", drops.summary());
    // The port, for a caller that asked for any free one.
    println!("LISTENING {local}");
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(a) => a,
            // Out of file descriptors and the like: go on after a pause.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let drops = drops.clone();
        tokio::spawn(async move {
            let _ = session::run(socket, &drops).await;
        });
    }
}
