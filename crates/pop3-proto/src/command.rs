//! Command lines → [`Command`] values (RFC 1939, RFC 2449, RFC 2595, RFC 5034).

use std::fmt;
use std::num::NonZeroU32;

/// A password or SASL response: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One parsed POP3 command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    User(String),
    /// Everything after `PASS `: a password may contain spaces (RFC 1939).
    Pass(Secret),
    Apop {
        user: String,
        digest: String,
    },
    Auth {
        mechanism: Option<String>,
        initial: Option<Secret>,
    },
    Capa,
    Stls,
    Quit,
    Stat,
    List(Option<NonZeroU32>),
    Retr(NonZeroU32),
    Dele(NonZeroU32),
    Noop,
    Rset,
    /// The message number, then the count of body lines (which may be 0).
    Top(NonZeroU32, u32),
    Uidl(Option<NonZeroU32>),
}

impl Command {
    /// The keyword, upper-case: for logs and metrics (a bounded set).
    pub fn name(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Quit => "QUIT",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Top(..) => "TOP",
            Command::Uidl(_) => "UIDL",
        }
    }
}

/// Why a line is not a command. `Display` is the text after `-ERR `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty command")]
    Empty,
    #[error("unknown command")]
    Unknown,
    #[error("{0}: missing argument")]
    MissingArgument(&'static str),
    #[error("{0}: too many arguments")]
    TooManyArguments(&'static str),
    #[error("{0}: invalid message number")]
    BadNumber(&'static str),
    #[error("{0}: invalid argument")]
    BadArgument(&'static str),
}

/// The largest argument a message number may have: numbers are 1-based and
/// fit in u32 (a maildrop never holds 4 billion messages).
fn message_number(cmd: &'static str, arg: &str) -> Result<NonZeroU32, ParseError> {
    NonZeroU32::new(line_count(cmd, arg)?).ok_or(ParseError::BadNumber(cmd))
}

/// A non-negative decimal without sign: `0` is allowed (TOP's line count).
fn line_count(cmd: &'static str, arg: &str) -> Result<u32, ParseError> {
    if arg.is_empty() || arg.len() > 10 || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadNumber(cmd));
    }
    arg.parse::<u32>().map_err(|_| ParseError::BadNumber(cmd))
}

/// Parses one command line, without its line ending. Keywords are
/// case-insensitive; arguments are separated by spaces (runs of spaces and
/// tabs are tolerated, as clients are sloppy).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = trim_end(line);
    let (keyword, rest) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    if keyword.is_empty() {
        return Err(ParseError::Empty);
    }
    if keyword.len() > 4 {
        return Err(ParseError::Unknown);
    }
    let mut kw = [0u8; 4];
    kw[..keyword.len()].copy_from_slice(keyword);
    kw.make_ascii_uppercase();
    let kw = &kw[..keyword.len()];

    // PASS takes the rest of the line verbatim, spaces included.
    if kw == b"PASS" {
        if rest.is_empty() {
            return Err(ParseError::MissingArgument("PASS"));
        }
        return Ok(Command::Pass(Secret(rest.to_vec())));
    }

    let rest = std::str::from_utf8(rest).map_err(|_| ParseError::BadArgument(static_name(kw)))?;
    let args: Vec<&str> = rest.split([' ', '\t']).filter(|a| !a.is_empty()).collect();
    let name = static_name(kw);
    let arity = |min: usize, max: usize| -> Result<(), ParseError> {
        if args.len() < min {
            Err(ParseError::MissingArgument(name))
        } else if args.len() > max {
            Err(ParseError::TooManyArguments(name))
        } else {
            Ok(())
        }
    };
    let cmd = match kw {
        b"USER" => {
            arity(1, 1)?;
            Command::User(args[0].to_owned())
        }
        b"APOP" => {
            arity(2, 2)?;
            let digest = args[1];
            if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseError::BadArgument(name));
            }
            Command::Apop {
                user: args[0].to_owned(),
                digest: digest.to_ascii_lowercase(),
            }
        }
        b"AUTH" => {
            arity(0, 2)?;
            Command::Auth {
                mechanism: args.first().map(|m| m.to_ascii_uppercase()),
                initial: args.get(1).map(|r| Secret(r.as_bytes().to_vec())),
            }
        }
        b"CAPA" => arity(0, 0).map(|_| Command::Capa)?,
        b"STLS" => arity(0, 0).map(|_| Command::Stls)?,
        b"QUIT" => arity(0, 0).map(|_| Command::Quit)?,
        b"STAT" => arity(0, 0).map(|_| Command::Stat)?,
        b"NOOP" => arity(0, 0).map(|_| Command::Noop)?,
        b"RSET" => arity(0, 0).map(|_| Command::Rset)?,
        b"LIST" => {
            arity(0, 1)?;
            Command::List(args.first().map(|a| message_number(name, a)).transpose()?)
        }
        b"UIDL" => {
            arity(0, 1)?;
            Command::Uidl(args.first().map(|a| message_number(name, a)).transpose()?)
        }
        b"RETR" => {
            arity(1, 1)?;
            Command::Retr(message_number(name, args[0])?)
        }
        b"DELE" => {
            arity(1, 1)?;
            Command::Dele(message_number(name, args[0])?)
        }
        b"TOP" => {
            arity(2, 2)?;
            Command::Top(message_number(name, args[0])?, line_count(name, args[1])?)
        }
        _ => return Err(ParseError::Unknown),
    };
    Ok(cmd)
}

fn static_name(kw: &[u8]) -> &'static str {
    match kw {
        b"USER" => "USER",
        b"PASS" => "PASS",
        b"APOP" => "APOP",
        b"AUTH" => "AUTH",
        b"CAPA" => "CAPA",
        b"STLS" => "STLS",
        b"QUIT" => "QUIT",
        b"STAT" => "STAT",
        b"NOOP" => "NOOP",
        b"RSET" => "RSET",
        b"LIST" => "LIST",
        b"UIDL" => "UIDL",
        b"RETR" => "RETR",
        b"DELE" => "DELE",
        b"TOP" => "TOP",
        _ => "command",
    }
}

fn trim_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n'] = line {
        line = rest;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn p(s: &str) -> Result<Command, ParseError> {
        parse(s.as_bytes())
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            p("USER bob@acme.example"),
            Ok(Command::User("bob@acme.example".into()))
        );
        assert_eq!(
            p("PASS two words "),
            Ok(Command::Pass(Secret(b"two words ".to_vec())))
        );
        assert_eq!(
            p("APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
            Ok(Command::Apop {
                user: "mrose".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into()
            })
        );
        assert_eq!(
            p("AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(
            p("auth plain AGJvYgBzZWNyZXQ="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some(Secret(b"AGJvYgBzZWNyZXQ=".to_vec()))
            })
        );
        assert_eq!(p("CAPA"), Ok(Command::Capa));
        assert_eq!(p("STLS"), Ok(Command::Stls));
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("STAT"), Ok(Command::Stat));
        assert_eq!(p("NOOP"), Ok(Command::Noop));
        assert_eq!(p("RSET"), Ok(Command::Rset));
        assert_eq!(p("LIST"), Ok(Command::List(None)));
        assert_eq!(p("LIST 2"), Ok(Command::List(Some(n(2)))));
        assert_eq!(p("UIDL"), Ok(Command::Uidl(None)));
        assert_eq!(p("UIDL 7"), Ok(Command::Uidl(Some(n(7)))));
        assert_eq!(p("RETR 1"), Ok(Command::Retr(n(1))));
        assert_eq!(p("DELE 4294967295"), Ok(Command::Dele(n(u32::MAX))));
        assert_eq!(p("TOP 1 0"), Ok(Command::Top(n(1), 0)));
        assert_eq!(p("TOP 3 10\r\n"), Ok(Command::Top(n(3), 10)));
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(p("stat"), Ok(Command::Stat));
        assert_eq!(p("ReTr 5"), Ok(Command::Retr(n(5))));
        assert_eq!(p("uSeR x"), Ok(Command::User("x".into())));
    }

    #[test]
    fn malformed_forms_are_errors() {
        use ParseError::*;
        assert_eq!(p(""), Err(Empty));
        assert_eq!(p(" STAT"), Err(Empty));
        assert_eq!(p("XYZZY"), Err(Unknown));
        assert_eq!(p("RETRIEVE 1"), Err(Unknown));
        assert_eq!(p("RETR"), Err(MissingArgument("RETR")));
        assert_eq!(p("RETR 0"), Err(BadNumber("RETR")));
        assert_eq!(p("RETR -1"), Err(BadNumber("RETR")));
        assert_eq!(p("RETR +1"), Err(BadNumber("RETR")));
        assert_eq!(p("RETR one"), Err(BadNumber("RETR")));
        assert_eq!(p("RETR 1.5"), Err(BadNumber("RETR")));
        assert_eq!(p("RETR 4294967296"), Err(BadNumber("RETR")));
        assert_eq!(p("RETR 99999999999999999999"), Err(BadNumber("RETR")));
        assert_eq!(p("RETR 1 2"), Err(TooManyArguments("RETR")));
        assert_eq!(p("DELE"), Err(MissingArgument("DELE")));
        assert_eq!(p("DELE 0"), Err(BadNumber("DELE")));
        assert_eq!(p("LIST 0"), Err(BadNumber("LIST")));
        assert_eq!(p("LIST 1 2"), Err(TooManyArguments("LIST")));
        assert_eq!(p("UIDL x"), Err(BadNumber("UIDL")));
        assert_eq!(p("TOP 1"), Err(MissingArgument("TOP")));
        assert_eq!(p("TOP 1 -1"), Err(BadNumber("TOP")));
        assert_eq!(p("TOP 0 1"), Err(BadNumber("TOP")));
        assert_eq!(p("TOP 1 2 3"), Err(TooManyArguments("TOP")));
        assert_eq!(p("STAT 1"), Err(TooManyArguments("STAT")));
        assert_eq!(p("QUIT now"), Err(TooManyArguments("QUIT")));
        assert_eq!(p("NOOP x"), Err(TooManyArguments("NOOP")));
        assert_eq!(p("RSET x"), Err(TooManyArguments("RSET")));
        assert_eq!(p("CAPA x"), Err(TooManyArguments("CAPA")));
        assert_eq!(p("USER"), Err(MissingArgument("USER")));
        assert_eq!(p("USER a b"), Err(TooManyArguments("USER")));
        assert_eq!(p("PASS"), Err(MissingArgument("PASS")));
        assert_eq!(p("APOP bob"), Err(MissingArgument("APOP")));
        assert_eq!(p("APOP bob nothex"), Err(BadArgument("APOP")));
        assert_eq!(p("AUTH PLAIN a b"), Err(TooManyArguments("AUTH")));
        assert_eq!(parse(b"USER \xff\xfe"), Err(BadArgument("USER")));
        assert_eq!(parse(b"\x00\x01"), Err(Unknown));
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = p("PASS hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
