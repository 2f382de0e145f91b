//! One pop3-canned connection: lines in, replies from memory out.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::maildrop::{Drops, Maildrop};

const GREETING: &[u8] = b"+OK pop3-canned ready.\r\n";
/// A command line longer than this closes the connection.
const MAX_LINE: usize = 1024;
/// A reply larger than this is written from where it is, not copied first.
const COPY_UP_TO: usize = 64 * 1024;

enum State<'a> {
    Authorization { user: Option<Vec<u8>> },
    Transaction(&'a Maildrop),
}

/// What a command asks of the connection besides its reply.
enum Next<'a> {
    Continue,
    /// Send this large reply as it is, after what is buffered.
    Send(&'a [u8]),
    Close,
}

/// Serves one connection to its end.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    drops: &Drops,
) -> std::io::Result<()> {
    let mut input: Vec<u8> = Vec::with_capacity(512);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    out.extend_from_slice(GREETING);
    let mut state = State::Authorization { user: None };
    loop {
        let mut start = 0;
        while let Some(lf) = input[start..].iter().position(|&b| b == b'\n') {
            let line = &input[start..start + lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            start += lf + 1;
            match command(line, &mut state, drops, &mut out) {
                Next::Continue => {}
                Next::Send(big) => {
                    if !out.is_empty() {
                        io.write_all(&out).await?;
                        out.clear();
                    }
                    io.write_all(big).await?;
                }
                Next::Close => {
                    io.write_all(&out).await?;
                    return io.shutdown().await;
                }
            }
        }
        input.drain(..start);
        if !out.is_empty() {
            io.write_all(&out).await?;
            out.clear();
        }
        if input.len() > MAX_LINE {
            io.write_all(b"-ERR Line too long.\r\n").await?;
            return io.shutdown().await;
        }
        if io.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

/// Answers one command line into `out`.
fn command<'a>(
    line: &[u8],
    state: &mut State<'a>,
    drops: &'a Drops,
    out: &mut Vec<u8>,
) -> Next<'a> {
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &b""[..]),
    };
    let mut name = [0u8; 4];
    if verb.len() == 4 {
        name.copy_from_slice(verb);
        name.make_ascii_uppercase();
    }
    match (&name, &mut *state) {
        (b"QUIT", _) => {
            out.extend_from_slice(b"+OK Logging out.\r\n");
            return Next::Close;
        }
        (b"CAPA", _) => out.extend_from_slice(b"+OK\r\nUSER\r\nPIPELINING\r\nUIDL\r\n.\r\n"),
        (b"NOOP", State::Transaction(_)) => out.extend_from_slice(b"+OK\r\n"),
        (b"USER", State::Authorization { user }) => {
            *user = Some(arg.to_vec());
            out.extend_from_slice(b"+OK\r\n");
        }
        (b"PASS", State::Authorization { user }) => {
            match user.take().and_then(|u| drops.for_login(&u)) {
                Some(drop) => {
                    out.extend_from_slice(&drop.login);
                    *state = State::Transaction(drop);
                }
                None => out.extend_from_slice(b"-ERR [AUTH] Send USER first.\r\n"),
            }
        }
        (b"STAT", State::Transaction(drop)) => out.extend_from_slice(&drop.stat),
        (b"LIST" | b"UIDL", State::Transaction(drop)) => {
            let uidl = &name == b"UIDL";
            if arg.is_empty() {
                out.extend_from_slice(if uidl { &drop.uidl } else { &drop.list });
            } else if let Some(m) = message(drop, arg) {
                let text = if uidl {
                    format!("+OK {} {}\r\n", lossy(arg), m.uidl)
                } else {
                    format!("+OK {} {}\r\n", lossy(arg), m.size)
                };
                out.extend_from_slice(text.as_bytes());
            } else {
                out.extend_from_slice(b"-ERR No such message.\r\n");
            }
        }
        (b"RETR", State::Transaction(drop)) => match message(drop, arg) {
            Some(m) if m.retr.len() > COPY_UP_TO => return Next::Send(&m.retr),
            Some(m) => out.extend_from_slice(&m.retr),
            None => out.extend_from_slice(b"-ERR No such message.\r\n"),
        },
        // Nothing is ever deleted: DELE marks nothing.
        (b"DELE", State::Transaction(drop)) => match message(drop, arg) {
            Some(_) => out.extend_from_slice(b"+OK Marked (nothing is ever deleted here).\r\n"),
            None => out.extend_from_slice(b"-ERR No such message.\r\n"),
        },
        (b"RSET", State::Transaction(_)) => out.extend_from_slice(b"+OK\r\n"),
        _ => out.extend_from_slice(b"-ERR Unknown command or not valid in this state.\r\n"),
    }
    Next::Continue
}

fn message<'a>(drop: &'a Maildrop, arg: &[u8]) -> Option<&'a crate::maildrop::Message> {
    let n: usize = std::str::from_utf8(arg).ok()?.trim().parse().ok()?;
    drop.messages.get(n.checked_sub(1)?)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pop3_proto::encode::decode_multiline;

    fn drops() -> Drops {
        let mut d = Drops::default();
        d.add(
            None,
            Maildrop::new(&[b"Subject: a\n\n.dot\nline\n".to_vec(), b"b\r\n".to_vec()]),
        );
        let big = b"x\n.y\n".repeat(20_000);
        d.add(Some("big".into()), Maildrop::new(&[big]));
        d
    }

    /// Runs a session on `input` sent at once; all the server wrote.
    async fn talk(input: &[u8]) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let d = drops();
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let serve = run(server, &d);
        let mut got = Vec::new();
        let read = client.read_to_end(&mut got);
        let (served, _) = tokio::join!(serve, read);
        served.unwrap();
        got
    }

    #[tokio::test]
    async fn pipelined_session_gets_every_reply_from_memory() {
        let got =
            talk(b"USER u\r\nPASS p\r\nSTAT\r\nUIDL\r\nLIST 2\r\nRETR 1\r\nRETR 3\r\nQUIT\r\n")
                .await;
        let text = String::from_utf8(got).unwrap();
        let want = "+OK pop3-canned ready.\r\n+OK\r\n+OK Logged in, 2 messages (29 octets).\r\n\
             +OK 2 29\r\n+OK\r\n1 000000016553F100\r\n2 000000026553F100\r\n.\r\n+OK 2 3\r\n\
             +OK 26 octets\r\nSubject: a\r\n\r\n..dot\r\nline\r\n.\r\n-ERR No such message.\r\n+OK Logging out.\r\n";
        assert_eq!(text, want);
    }

    #[tokio::test]
    async fn a_large_message_is_sent_whole_and_stuffed() {
        let got = talk(b"user big1\r\npass p\r\nretr 1\r\nquit\r\n").await;
        let body_start = got.windows(8).position(|w| w == b"octets\r\n").unwrap() + 8;
        let end = got.len() - b"+OK Logging out.\r\n".len();
        let body = decode_multiline(&got[body_start..end]).unwrap();
        assert_eq!(body, b"x\r\n.y\r\n".repeat(20_000));
        assert!(String::from_utf8_lossy(&got[..body_start]).contains("+OK 140000 octets"));
    }

    #[tokio::test]
    async fn before_login_only_login_commands_work_and_long_lines_close() {
        let got = talk(b"STAT\r\nPASS x\r\n").await;
        assert_eq!(
            got,
            b"+OK pop3-canned ready.\r\n-ERR Unknown command or not valid in this state.\r\n\
              -ERR [AUTH] Send USER first.\r\n"
        );
        let got = talk(&[b'a'; 5000]).await;
        assert!(got.ends_with(b"-ERR Line too long.\r\n"));
    }
}
