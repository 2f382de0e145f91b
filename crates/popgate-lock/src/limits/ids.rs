//! Who a limit counts: a client by its address prefix ([`ClientNet`]), an
//! account and an (account, prefix) pair by fixed-length digests
//! ([`AccountId`], [`PairId`]), never by the names clients send.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sha2::{Digest as _, Sha256};

/// A client address cut to its counted prefix: `192.0.2.7` (a /32 shows as
/// the address), `2001:db8:1:2::/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientNet {
    addr: IpAddr,
    len: u8,
}

impl ClientNet {
    /// `ip` (IPv4-mapped IPv6 as IPv4) cut to `ipv4_prefix` or `ipv6_prefix` bits.
    pub fn new(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> Self {
        match canonical_ip(ip) {
            IpAddr::V4(a) => {
                let len = ipv4_prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                ClientNet {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = ipv6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                ClientNet {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    len,
                }
            }
        }
    }

    /// The first address of the prefix.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    fn is_host(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => self.len == 32,
            IpAddr::V6(_) => self.len == 128,
        }
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// An account as the limits know it: 16 bytes of the SHA-256 of its
/// lower-cased name. Fixed length whatever the name, and the same in every
/// replica (it names Redis keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountId([u8; 16]);

impl AccountId {
    pub fn of(account: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"popgate account\0");
        h.update(account.to_ascii_lowercase().as_bytes());
        AccountId(truncate(&h.finalize()))
    }

    /// The (account, prefix) pair.
    pub fn pair(&self, net: &ClientNet) -> PairId {
        let mut h = Sha256::new();
        h.update(b"popgate pair\0");
        h.update(self.0);
        match net.addr {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        h.update([net.len]);
        PairId(truncate(&h.finalize()))
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

/// An (account, client prefix) pair: 16 bytes of SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PairId([u8; 16]);

impl PairId {
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

fn truncate(digest: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An address as counted: an IPv4 client seen as IPv4-mapped IPv6 is the
/// same client.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
