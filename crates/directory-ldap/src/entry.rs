//! What popgate reads from a user's entry: the password values and the
//! per-user fields of [`UserAttributes`].

use std::net::IpAddr;

use ldap3::SearchEntry;
use popgate_auth::UserInfo;
use popgate_auth::nets::AllowNets;
use tracing::{info, warn};

use crate::config::UserAttributes;

/// Values of a multi-valued attribute that are read.
const MAX_VALUES: usize = 4;

/// The text values of `attribute` in `entry` (names compare without case).
pub(crate) fn values(entry: &SearchEntry, attribute: &str) -> Vec<String> {
    let text = entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attribute))
        .flat_map(|(_, v)| v.iter().cloned());
    let binary = entry
        .bin_attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attribute))
        .flat_map(|(_, v)| v.iter())
        .filter_map(|v| String::from_utf8(v.clone()).ok());
    text.chain(binary).take(MAX_VALUES).collect()
}

/// The attributes to ask for besides the password (or `1.1`, none).
pub(crate) fn wanted<'a>(attributes: &'a UserAttributes, first: &'a str) -> Vec<&'a str> {
    let extra = [
        &attributes.allow_nets,
        &attributes.login_delay,
        &attributes.enabled,
        &attributes.user,
        &attributes.location,
    ];
    let mut out: Vec<&str> = extra.into_iter().flatten().map(String::as_str).collect();
    // "1.1" asks for no attribute at all; it goes alone (RFC 4511, 4.5.1.8).
    if first != "1.1" || out.is_empty() {
        out.insert(0, first);
    }
    out
}

/// Whether a user whose password matched may log in from `client`, and
/// with which fields.
pub(crate) fn admit(
    entry: &SearchEntry,
    attributes: &UserAttributes,
    client: Option<IpAddr>,
) -> Option<UserInfo> {
    if let Some(name) = &attributes.enabled {
        let on = values(entry, name).iter().any(|v| {
            ["true", "active", "enabled", "yes", "1"]
                .iter()
                .any(|y| v.trim().eq_ignore_ascii_case(y))
        });
        if !on {
            info!(dn = %entry.dn, "LDAP: login refused: the user is disabled ({name})");
            return None;
        }
    }
    if let Some(name) = &attributes.allow_nets {
        let list = values(entry, name);
        if !list.is_empty() {
            let (nets, invalid) = AllowNets::parse(&list.join(","));
            for bad in invalid {
                warn!(dn = %entry.dn, "LDAP: {bad}; it matches no address");
            }
            if !nets.admits(client) {
                let client = client.map_or_else(|| "none".to_owned(), |c| c.to_string());
                info!(dn = %entry.dn, client, "LDAP: login refused: the client address is not in the user's allow_nets");
                return None;
            }
        }
    }
    let login_delay = attributes.login_delay.as_ref().and_then(|name| {
        let value = values(entry, name).into_iter().next()?;
        match value.trim().parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                warn!(dn = %entry.dn, "LDAP: ignoring {name}: not a number");
                None
            }
        }
    });
    Some(UserInfo {
        login_delay,
        ..directed(entry, attributes)
    })
}

/// Where the entry's mail goes: its `user_attribute` and
/// `location_attribute` (the first non-empty value of each).
pub(crate) fn directed(entry: &SearchEntry, attributes: &UserAttributes) -> UserInfo {
    let first = |name: &Option<String>| {
        let value = values(entry, name.as_ref()?).into_iter().next()?;
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_owned())
    };
    UserInfo {
        login_delay: None,
        mailbox: first(&attributes.user),
        location: first(&attributes.location),
    }
}
