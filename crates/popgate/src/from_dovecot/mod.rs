//! `popgate from-dovecot`: reads a Dovecot configuration (its files,
//! following `!include`, or `doveconf -n` output) and prints the equivalent
//! popgate.toml, with what it could not map listed as TOML comments and on
//! standard error.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod conf;
mod map;
mod toml;
mod users;

/// The command's arguments.
pub struct Args {
    pub config_dir: PathBuf,
    pub doveconf_output: Option<PathBuf>,
    pub domains: Vec<String>,
    pub tenant: String,
}

/// Exit status when the output is incomplete: users or mail did not map.
const INCOMPLETE: u8 = 3;

pub fn run(args: Args) -> ExitCode {
    let root = match &args.doveconf_output {
        Some(file) if file == Path::new("-") => {
            let mut text = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                eprintln!("popgate: standard input: {e}");
                return ExitCode::from(2);
            }
            conf::parse_text(&text, "standard input", &args.config_dir)
        }
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|text| {
                conf::parse_text(&text, &file.display().to_string(), &args.config_dir)
            }),
        None => conf::read_file(&args.config_dir.join("dovecot.conf")),
    };
    let root = match root {
        Ok(r) => r,
        Err(e) => {
            eprintln!("popgate: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = map::convert(
        &root,
        &map::Options {
            tenant: args.tenant,
            domains: args
                .domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            base: args.config_dir,
        },
    );
    print!("{}", outcome.toml);
    for u in &outcome.unmapped {
        eprintln!("popgate from-dovecot: not mapped: {u}");
    }
    if outcome.complete {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "popgate from-dovecot: the configuration is incomplete (users or mail did not map); fix the placeholders"
        );
        ExitCode::from(INCOMPLETE)
    }
}
