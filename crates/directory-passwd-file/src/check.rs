//! Checking a login against the loaded users: passwords in the hashing
//! pool (unknown users cost as much as known ones), APOP digests, and
//! `allow_nets`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use popgate_auth::scheme::{self, Scheme};
use popgate_auth::{Login, UserInfo};

use crate::Inner;
use crate::parse::{Entry, Users};

impl Entry {
    /// Whether `client` may log in as this user.
    fn admits(&self, client: Option<IpAddr>) -> bool {
        self.allow_nets.as_ref().is_none_or(|n| n.admits(client))
    }
}

impl Users {
    pub(crate) fn lookup(&self, local: &str, domain: &str) -> Option<(&str, &Entry)> {
        let local = local.to_lowercase();
        let full = (!domain.is_empty()).then(|| format!("{local}@{}", domain.to_lowercase()));
        full.into_iter()
            .chain(std::iter::once(local))
            .find_map(|key| self.map.get_key_value(&key))
            .map(|(k, e)| (k.as_str(), e))
    }

    /// Checks an APOP digest; only enabled PLAIN users can match.
    pub(crate) fn verify_apop(
        &self,
        path: &Path,
        login: Login<'_>,
        timestamp: &str,
        digest: &str,
    ) -> Option<UserInfo> {
        let found = self.lookup(login.local, login.domain);
        let user = found.map(|(u, _)| u);
        let found = found.map(|(_, e)| e);
        let plain = found.and_then(|e| match scheme::parse(&e.stored) {
            Ok((Scheme::Plain, secret)) => Some(secret),
            _ => None,
        });
        // Unknown and non-PLAIN users cost one MD5 as well.
        let expected = apop_digest(timestamp, plain.unwrap_or("").as_bytes());
        let given = digest.trim().to_ascii_lowercase();
        let matched: bool = expected.as_bytes().ct_eq(given.as_bytes()).into();
        let entry = found.filter(|e| plain.is_some() && !e.disabled)?;
        if matched && !entry.admits(login.client) {
            refused_by_nets(path, user.unwrap_or_default(), login.client);
            return None;
        }
        matched.then(|| entry.info.clone())
    }
}

impl Inner {
    pub(crate) fn verify(
        &self,
        users: &Users,
        local: &str,
        domain: &str,
        client: Option<IpAddr>,
        password: &[u8],
    ) -> Option<UserInfo> {
        let limits = self.hashing.limits();
        // Unknown users, and users whose password cannot be checked, are
        // checked against the dummy: all failures cost about the same.
        let dummy = || {
            if let Some(dummy) = &users.dummy {
                let _ = scheme::verify_within(dummy, password, limits);
            }
            None
        };
        let Some((user, entry)) = users.lookup(local, domain) else {
            return dummy();
        };
        if let Some(reason) = &entry.over_cap {
            if !entry.warned.swap(true, Ordering::Relaxed) {
                warn!(file = %self.path.display(), user, reason = &**reason, "login refused: password hash above the cost cap (not hashed)");
            }
            return dummy();
        }
        match scheme::verify_within(&entry.stored, password, limits) {
            Ok(true) if !entry.disabled => {
                if !entry.admits(client) {
                    refused_by_nets(&self.path, user, client);
                    return None;
                }
                Some(entry.info.clone())
            }
            Ok(_) => None,
            Err(error) => {
                if !entry.stored.is_empty() {
                    warn!(file = %self.path.display(), user, %error, "cannot check password");
                }
                dummy()
            }
        }
    }
}

/// Logs a login with the right password from outside the user's allow_nets.
fn refused_by_nets(path: &Path, user: &str, client: Option<IpAddr>) {
    let client = client.map_or_else(|| "none".to_owned(), |c| c.to_string());
    info!(file = %path.display(), user, client, "login refused: the client address is not in the user's allow_nets");
}

/// The lower-case hex MD5 of `timestamp` followed by `secret` (RFC 1939).
fn apop_digest(timestamp: &str, secret: &[u8]) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret);
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apop_digest_matches_rfc_1939() {
        // RFC 1939, section 7.
        let digest = apop_digest("<1896.697170952@dbc.mtview.ca.us>", b"tanstaaf");
        assert_eq!(digest, "c4c9334bac560ecc979e58001b3e22fb");
    }
}
