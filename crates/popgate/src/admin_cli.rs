//! `popgate who` and `popgate kick`: clients of a replica's admin
//! endpoints on its metrics port (and `popgate healthcheck`'s HTTP GET).
//!
//! Where to connect and the token come from the flags, else from the
//! configuration (`metrics.address`, `metrics.bearer_token` or its file),
//! so on a replica's host `popgate who -c popgate.toml` just works.
//!
//! Exit statuses: 0 done; 1 the replica could not be reached or answered
//! badly; 2 a bad configuration or flag; 3 the replica refused the token
//! (or has none set, so its admin endpoints are off); 4 the listing is
//! partial: some replicas could not be asked (printed on stderr).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use popgate_metrics::Listing;
use popgate_metrics::admin::percent_encode;

/// The most of an answer read.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// Where the admin endpoints are and the token for them.
#[derive(clap::Args, Debug)]
pub(crate) struct Target {
    #[arg(long, short, value_name = "FILE", help = crate::CONFIG_HELP)]
    config: Option<PathBuf>,
    /// The replica's metrics port, as http://HOST:PORT (default: the
    /// configuration's metrics.address).
    #[arg(long)]
    url: Option<String>,
    /// A file holding the bearer token (default: the configuration's
    /// metrics.bearer_token, or the POPGATE_ADMIN_TOKEN variable).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// A failure and its exit status.
struct Failure(u8, String);

impl Target {
    fn resolve(&self) -> Result<(String, String), Failure> {
        let from_config = || {
            crate::config::load(self.config.as_deref())
                .map_err(|e| Failure(2, format!("configuration error: {e}")))
        };
        let mut config = None;
        let url = match &self.url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let c = config.insert(from_config()?);
                let m = c.metrics.as_ref().ok_or_else(|| {
                    Failure(
                        2,
                        "the configuration has no [metrics] section: give --url".into(),
                    )
                })?;
                format!("http://{}", connectable(&m.address))
            }
        };
        let token = if let Some(f) = &self.token_file {
            std::fs::read_to_string(f)
                .map_err(|e| Failure(2, format!("{}: {e}", f.display())))?
                .trim()
                .to_owned()
        } else if let Ok(t) = std::env::var("POPGATE_ADMIN_TOKEN") {
            t.trim().to_owned()
        } else {
            let c = match config {
                Some(c) => c,
                None => from_config()?,
            };
            c.metrics.and_then(|m| m.bearer_token).ok_or_else(|| {
                Failure(
                    2,
                    "no token: set metrics.bearer_token (the admin endpoints need it), \
                         or give --token-file or POPGATE_ADMIN_TOKEN"
                        .into(),
                )
            })?
        };
        Ok((url, token))
    }
}

/// A listen address as one to connect to: a wildcard is this host.
fn connectable(address: &str) -> String {
    if let Some(port) = address.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = address.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        address.to_owned()
    }
}

/// `popgate who`.
pub(crate) fn who(
    target: &Target,
    tenant: Option<String>,
    user: Option<String>,
    json: bool,
) -> ExitCode {
    finish(
        call(target, "GET", "sessions", tenant, user).map(|(listing, raw)| {
            if json {
                println!("{raw}");
            } else {
                print!("{}", table(&listing, SystemTime::now()));
            }
            listing
        }),
    )
}

/// `popgate kick`.
pub(crate) fn kick(target: &Target, tenant: Option<String>, user: Option<String>) -> ExitCode {
    finish(
        call(target, "POST", "kick", tenant, user).map(|(listing, _)| {
            for s in &listing.sessions {
                println!(
                    "kicked {} {} {} on {} ({})",
                    s.id, s.tenant, s.user, s.replica, s.host
                );
            }
            println!("{} session(s) asked to end", listing.sessions.len());
            listing
        }),
    )
}

fn finish(result: Result<Listing, Failure>) -> ExitCode {
    match result {
        Ok(listing) if listing.errors.is_empty() => ExitCode::SUCCESS,
        Ok(listing) => {
            for e in &listing.errors {
                eprintln!("popgate: {e}");
            }
            ExitCode::from(4)
        }
        Err(Failure(code, message)) => {
            eprintln!("popgate: {message}");
            ExitCode::from(code)
        }
    }
}

fn call(
    target: &Target,
    method: &str,
    endpoint: &str,
    tenant: Option<String>,
    user: Option<String>,
) -> Result<(Listing, String), Failure> {
    let (url, token) = target.resolve()?;
    let mut query = Vec::new();
    if let Some(t) = tenant {
        query.push(format!("tenant={}", percent_encode(&t)));
    }
    if let Some(u) = user {
        query.push(format!("user={}", percent_encode(&u)));
    }
    let path = format!("/admin/{endpoint}?{}", query.join("&"));
    let (status, body) = request(&url, method, &path, Some(&token)).map_err(|e| Failure(1, e))?;
    match status {
        200 => {}
        401 => return Err(Failure(3, format!("{url} refused the token"))),
        403 => return Err(Failure(3, format!("{url}: {}", body.trim()))),
        _ => {
            return Err(Failure(
                1,
                format!("{url} answered {status}: {}", body.trim()),
            ));
        }
    }
    let listing = serde_json::from_str(&body)
        .map_err(|e| Failure(1, format!("{url}: unreadable answer: {e}")))?;
    Ok((listing, body))
}

/// The readable listing: one line per session, oldest first.
fn table(listing: &Listing, now: SystemTime) -> String {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut rows = vec![[
        "REPLICA".to_owned(),
        "HOST".into(),
        "TENANT".into(),
        "USER".into(),
        "CLIENT".into(),
        "SINCE".into(),
        "FOR".into(),
        "BYTES".into(),
        "SESSION".into(),
    ]];
    for s in &listing.sessions {
        rows.push([
            s.replica.clone(),
            s.host.clone(),
            s.tenant.clone(),
            s.user.clone(),
            s.client.clone(),
            utc(s.since),
            elapsed(now.saturating_sub(s.since)),
            s.bytes_sent.to_string(),
            s.id.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "{} session(s) on {} replica(s)\n",
        listing.sessions.len(),
        listing.replicas.len()
    ));
    out
}

/// Seconds since the epoch as `2026-12-01T16:30:00Z`.
fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86400, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A duration as `3h05m`, `12m30s` or `45s`.
fn elapsed(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// One HTTP/1.0 request to `url` (http://host:port) with a 5 s budget per
/// step: the status and the body.
pub(crate) fn request(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let authority = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?
        .split('/')
        .next()
        .unwrap_or("");
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("{addr}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(io)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer: {:?}", head.lines().next()))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use popgate_metrics::FleetSession;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_142_645), "2026-12-01T16:30:45Z");
    }

    #[test]
    fn the_table_has_a_row_per_session_and_a_total() {
        let s = FleetSession {
            replica: "0000abcd".into(),
            host: "pod-1".into(),
            id: "0000abcd-000017".into(),
            tenant: "acme".into(),
            user: "bob@acme.example".into(),
            client: "192.0.2.1:4000".into(),
            since: 1_796_142_645,
            bytes_sent: 1234,
        };
        let listing = Listing {
            sessions: vec![s],
            replicas: vec!["0000abcd".into(), "0000ef01".into()],
            errors: vec![],
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_796_142_645 + 75);
        let text = table(&listing, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("REPLICA   HOST   TENANT"), "{text}");
        for cell in [
            "0000abcd",
            "pod-1",
            "bob@acme.example",
            "192.0.2.1:4000",
            "2026-12-01T16:30:45Z",
            "1m15s",
            "1234",
            "0000abcd-000017",
        ] {
            assert!(lines[1].contains(cell), "{cell}: {text}");
        }
        assert_eq!(lines[2], "1 session(s) on 2 replica(s)");
    }

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        assert_eq!(connectable("0.0.0.0:9100"), "127.0.0.1:9100");
        assert_eq!(connectable("[::]:9100"), "[::1]:9100");
        assert_eq!(connectable("10.0.0.5:9100"), "10.0.0.5:9100");
    }
}
