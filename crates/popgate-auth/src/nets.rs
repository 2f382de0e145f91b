//! Dovecot's `allow_nets`: the networks a user may log in from.
//!
//! A list of IP addresses and networks separated by commas (or white
//! space): `127.0.0.0/8,192.168.0.0/16,1.2.3.4,::1,2001:db8::/32`, an IPv6
//! address optionally in brackets (`[::1]/128`). A bare address is that one
//! address. `local` matches a login without a client address (there is none
//! from a Unix socket in Dovecot; in popgate, a check made without one).
//! IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are matched as IPv4, as in
//! Dovecot. An entry that does not parse matches nothing (fail closed).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// A parsed `allow_nets` value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowNets {
    nets: Vec<IpNet>,
    local: bool,
}

/// An `allow_nets` entry that is not an address, a network or `local`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("allow_nets: {0:?} is not an IP address, a network (address/bits) or \"local\"")]
pub struct InvalidNet(pub String);

impl AllowNets {
    /// Parses a list; entries that do not parse are returned beside it and
    /// match nothing.
    pub fn parse(list: &str) -> (AllowNets, Vec<InvalidNet>) {
        let mut out = AllowNets::default();
        let mut invalid = Vec::new();
        for entry in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            if entry.eq_ignore_ascii_case("local") {
                out.local = true;
                continue;
            }
            match parse_net(entry) {
                Some(net) => out.nets.push(net),
                None => invalid.push(InvalidNet(entry.chars().take(64).collect())),
            }
        }
        (out, invalid)
    }

    /// Parses a list, refusing any entry that does not parse.
    pub fn parse_strict(list: &str) -> Result<AllowNets, InvalidNet> {
        let (nets, mut invalid) = AllowNets::parse(list);
        match invalid.is_empty() {
            true => Ok(nets),
            false => Err(invalid.swap_remove(0)),
        }
    }

    /// Whether a login from `client` is allowed.
    pub fn admits(&self, client: Option<IpAddr>) -> bool {
        match client {
            None => self.local,
            Some(ip) => {
                let ip = ip.to_canonical();
                self.nets.iter().any(|net| net.contains(&ip))
            }
        }
    }
}

impl fmt::Display for AllowNets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for net in &self.nets {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{net}")?;
        }
        if self.local {
            f.write_str(if first { "local" } else { ",local" })?;
        }
        Ok(())
    }
}

fn parse_net(entry: &str) -> Option<IpNet> {
    let (addr, bits) = match entry.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (entry, None),
    };
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip: IpAddr = addr.parse().ok()?;
    // `::ffff:10.0.0.0/104` is the IPv4 network 10.0.0.0/8.
    let (ip, bits) = match (ip, ip.to_canonical()) {
        (IpAddr::V6(_), v4 @ IpAddr::V4(_)) => {
            let bits = match bits {
                Some(b) => Some(parse_bits(b, 128)?.checked_sub(96)?),
                None => None,
            };
            (v4, bits)
        }
        _ => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => Some(parse_bits(b, max)?),
                None => None,
            };
            (ip, bits)
        }
    };
    let bits = bits.unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
    IpNet::new(ip, bits).ok().map(|n| n.trunc())
}

fn parse_bits(bits: &str, max: u8) -> Option<u8> {
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    bits.parse::<u8>().ok().filter(|&b| b <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn dovecot_examples() {
        let (nets, bad) = AllowNets::parse("127.0.0.0/8,192.168.0.0/16,1.2.3.4,4.5.6.7");
        assert!(bad.is_empty());
        for yes in [
            "127.0.0.1",
            "127.255.0.9",
            "192.168.44.1",
            "1.2.3.4",
            "4.5.6.7",
        ] {
            assert!(nets.admits(ip(yes)), "{yes}");
        }
        for no in ["128.0.0.1", "1.2.3.5", "10.0.0.1", "::1"] {
            assert!(!nets.admits(ip(no)), "{no}");
        }
        assert!(!nets.admits(None));

        let (nets, bad) = AllowNets::parse("::1,2001:abcd:abcd::0:0/80,1.2.3.4");
        assert!(bad.is_empty());
        assert!(nets.admits(ip("::1")));
        assert!(nets.admits(ip("2001:abcd:abcd::1:2")));
        assert!(!nets.admits(ip("2001:abcd:abce::1")));
        // IPv4-mapped clients match IPv4 networks.
        assert!(nets.admits(ip("::ffff:1.2.3.4")));
    }

    #[test]
    fn local_brackets_spaces_and_host_bits() {
        let (nets, bad) = AllowNets::parse("local, [::1]/128 10.1.2.3/8");
        assert!(bad.is_empty(), "{bad:?}");
        assert!(nets.admits(None));
        assert!(nets.admits(ip("::1")));
        assert!(nets.admits(ip("10.200.0.1")));
        assert_eq!(nets.to_string(), "::1/128,10.0.0.0/8,local");
        let (nets, _) = AllowNets::parse("::ffff:10.0.0.0/104");
        assert!(nets.admits(ip("10.9.9.9")));
        assert!(!nets.admits(ip("11.0.0.1")));
    }

    #[test]
    fn bad_entries_match_nothing() {
        let (nets, bad) = AllowNets::parse("10.0.0.0/33,example.com,1.2.3.4/x,,::/129,0.0.0.0/0");
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(bad[1].to_string().contains("example.com"));
        // Only the good entry counts.
        assert!(nets.admits(ip("8.8.8.8")));
        assert!(!nets.admits(ip("::2")));
        assert!(AllowNets::parse_strict("10.0.0.0/8,nope").is_err());
        assert!(AllowNets::parse("").0.nets.is_empty());
        assert!(!AllowNets::parse("").0.admits(ip("127.0.0.1")));
    }
}
