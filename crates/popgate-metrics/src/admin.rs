//! The admin endpoints of the metrics port, behind `popgate who` and
//! `popgate kick`:
//!
//! - `GET /admin/sessions?tenant=T&user=U`: the live sessions of the fleet
//!   (of this process alone with in-memory locks), as JSON.
//! - `POST /admin/kick?tenant=T&user=U`: ends the matching sessions on
//!   whichever replica holds them; at least one of the two is required.
//!
//! Both always want the bearer token: with no `metrics.bearer_token` they
//! answer 403 (they end sessions, and the metrics port is often reachable
//! by a whole monitoring network), a missing or wrong token gets 401. The
//! POP3 listeners never serve them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use popgate_server::{SessionFilter, SessionInfo};

use crate::http::Response;

/// One live session of the fleet, as listed and as published to the other
/// replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSession {
    /// The replica holding it: its session-id prefix.
    pub replica: String,
    /// The replica's host name (a pod's name on Kubernetes).
    pub host: String,
    /// The session id, as in the logs.
    pub id: String,
    pub tenant: String,
    pub user: String,
    pub client: String,
    /// When its login completed, in seconds since the Unix epoch.
    pub since: u64,
    pub bytes_sent: u64,
}

impl FleetSession {
    /// A session of this process.
    pub fn local(replica: &str, host: &str, s: &SessionInfo) -> Self {
        FleetSession {
            replica: replica.to_owned(),
            host: host.to_owned(),
            id: s.id.to_string(),
            tenant: s.tenant.clone(),
            user: s.user.clone(),
            client: s.client.to_string(),
            since: s
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            bytes_sent: s.bytes_sent,
        }
    }
}

/// What both endpoints answer: the sessions listed (or asked to end), and
/// the replicas that could not be asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub sessions: Vec<FleetSession>,
    /// The replicas whose listings were read (this one included).
    #[serde(default)]
    pub replicas: Vec<String>,
    /// What went wrong reading the fleet (Redis down): the listing is
    /// then this replica's alone.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// The fleet's sessions, as the binary wires them.
#[async_trait]
pub trait Admin: Send + Sync {
    /// The live sessions `filter` matches.
    async fn sessions(&self, filter: &SessionFilter) -> Listing;
    /// Ends the live sessions `filter` matches; answers those asked to end.
    async fn kick(&self, filter: &SessionFilter) -> Listing;
}

/// The response to an admin request (`path` starts with `/admin/`),
/// once the token has been checked.
pub(crate) async fn respond(admin: &dyn Admin, method: &str, path: &str, query: &str) -> Response {
    let want = match path {
        "/admin/sessions" => "GET",
        "/admin/kick" => "POST",
        _ => return Response::text(404, "not found\n"),
    };
    if method != want {
        return Response::text(405, "method not allowed\n").header("Allow", want);
    }
    let filter = match parse_filter(query) {
        Ok(f) => f,
        Err(e) => return Response::text(400, format!("{e}\n")),
    };
    let listing = if want == "GET" {
        admin.sessions(&filter).await
    } else {
        if filter.is_empty() {
            return Response::text(400, "a kick names a tenant or a user (or both)\n");
        }
        admin.kick(&filter).await
    };
    match serde_json::to_string(&listing) {
        Ok(body) => Response {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        },
        Err(e) => Response::text(500, format!("{e}\n")),
    }
}

/// `tenant=..&user=..`, percent-encoded; anything else is refused.
fn parse_filter(query: &str) -> Result<SessionFilter, String> {
    let mut filter = SessionFilter::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| format!("{name}: bad percent-encoding"))?;
        let slot = match name {
            "tenant" => &mut filter.tenant,
            "user" => &mut filter.user,
            _ => return Err(format!("unknown parameter {name:?} (tenant, user)")),
        };
        if value.is_empty() {
            return Err(format!("{name}: empty"));
        }
        *slot = Some(value);
    }
    Ok(filter)
}

/// Decodes `%XX` and `+`; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes everything but unreserved characters (RFC 3986), for a query.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_read_from_the_query() {
        assert_eq!(parse_filter("").unwrap(), SessionFilter::default());
        let f = parse_filter("tenant=acme&user=bob%40acme.example").unwrap();
        assert_eq!(f.tenant.as_deref(), Some("acme"));
        assert_eq!(f.user.as_deref(), Some("bob@acme.example"));
        assert!(
            parse_filter("who=x")
                .unwrap_err()
                .contains("unknown parameter")
        );
        assert!(parse_filter("user=").is_err());
        assert!(parse_filter("user=%4").is_err());
        assert!(parse_filter("user=%ff").is_err(), "not UTF-8");
    }

    #[test]
    fn percent_encoding_round_trips() {
        for s in ["bob@acme.example", "a b&c=d%e/ü", ""] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_encode("bob@x"), "bob%40x");
    }
}
