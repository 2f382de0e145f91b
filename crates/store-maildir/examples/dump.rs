//! The Maildir store's view of one Maildir, for comparing with Dovecot.
//!
//! ```text
//! dump list    MAILDIR [UIDL_FORMAT]   one "<num> <uidl> <size>" line per message
//! dump fetch   MAILDIR NUM             message NUM as stored, to stdout
//! dump append  MAILDIR                 delivers stdin, prints its UIDL
//! dump expunge MAILDIR FENCE NUM...    deletes messages, prints the report
//! dump time    MAILDIR [ROUNDS]        times open (release build recommended)
//! ```

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use popgate_store::{MailStore, MailboxId};
use store_maildir::{DEFAULT_UIDL_FORMAT, MaildirConfig, MaildirStore};
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: dump list|fetch|append|expunge|time MAILDIR [ARGS]");
        return ExitCode::from(2);
    }
    let format = match args[0].as_str() {
        "list" => args.get(2).cloned(),
        _ => None,
    };
    let store = MaildirStore::new(MaildirConfig {
        path_template: args[1].replace('%', "%%"),
        uidl_format: format.unwrap_or_else(|| DEFAULT_UIDL_FORMAT.into()),
    })
    .expect("valid config");
    let mailbox = MailboxId::new("dump", "user", "");
    match run(&store, &mailbox, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dump: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(store: &MaildirStore, mailbox: &MailboxId, args: &[String]) -> Result<(), String> {
    let num = |s: &String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
    match args[0].as_str() {
        "list" => {
            let drop = store.open(mailbox).await.map_err(|e| e.to_string())?;
            for (i, m) in drop.messages().iter().enumerate() {
                println!("{} {} {}", i + 1, m.uidl, m.size);
            }
        }
        "fetch" => {
            let drop = store.open(mailbox).await.map_err(|e| e.to_string())?;
            let n = num(args.get(2).ok_or("fetch needs NUM")?)?;
            let mut stream = drop.fetch(n - 1).await.map_err(|e| e.to_string())?;
            let mut body = Vec::new();
            stream
                .read_to_end(&mut body)
                .await
                .map_err(|e| e.to_string())?;
            let mut out = std::io::stdout().lock();
            out.write_all(&body)
                .and_then(|()| out.flush())
                .map_err(|e| e.to_string())?;
        }
        "append" => {
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| e.to_string())?;
            let uidl = store
                .append(mailbox, Box::pin(std::io::Cursor::new(input)))
                .await
                .map_err(|e| e.to_string())?;
            println!("{uidl}");
        }
        "expunge" => {
            let fence = args
                .get(2)
                .ok_or("expunge needs FENCE")?
                .parse::<u64>()
                .map_err(|e| e.to_string())?;
            let indexes = args[3..]
                .iter()
                .map(|s| num(s).map(|n| n - 1))
                .collect::<Result<Vec<_>, _>>()?;
            let mut drop = store.open(mailbox).await.map_err(|e| e.to_string())?;
            let report = drop
                .expunge(&indexes, fence)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "deleted {} already_gone {}",
                report.deleted, report.already_gone
            );
        }
        "time" => {
            let rounds = args.get(2).map(num).transpose()?.unwrap_or(10);
            let first = Instant::now();
            let n = store
                .open(mailbox)
                .await
                .map_err(|e| e.to_string())?
                .messages()
                .len();
            println!("first open: {n} messages in {:?}", first.elapsed());
            let start = Instant::now();
            for _ in 0..rounds {
                store.open(mailbox).await.map_err(|e| e.to_string())?;
            }
            println!(
                "open: {:?} each over {rounds} rounds",
                start.elapsed() / rounds as u32
            );
        }
        other => return Err(format!("unknown command {other}")),
    }
    Ok(())
}
