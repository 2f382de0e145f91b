//! PROXY protocol v1 and v2 (haproxy's spec): the load balancer tells us
//! the real client address before the POP3 bytes start.
//!
//! The header is read without reading past it (v2 announces its length;
//! v1 is found with `peek`), so what follows — POP3 lines or a TLS
//! ClientHello — stays in the socket for the next layer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;
/// Larger v2 headers (many TLVs) are refused rather than buffered.
const V2_MAX_PAYLOAD: usize = 4096;

/// What the header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection from this client.
    Proxied(SocketAddr),
    /// The proxy speaking for itself (health checks: v2 LOCAL, v1 UNKNOWN).
    Local,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no PROXY header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("PROXY header not received in time")]
    Timeout,
    #[error("connection closed during PROXY header")]
    Closed,
}

impl ProxyError {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Missing => "missing",
            ProxyError::Malformed(_) => "malformed",
            ProxyError::Timeout => "timeout",
            ProxyError::Closed => "closed",
        }
    }
}

/// Reads the PROXY header from a fresh connection.
pub async fn read_header(
    socket: &mut TcpStream,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyError> {
    match tokio::time::timeout(timeout, read_inner(socket)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout),
    }
}

async fn read_inner(socket: &mut TcpStream) -> Result<ProxyHeader, ProxyError> {
    let mut peeked = [0u8; V1_MAX + 1];
    loop {
        let n = socket
            .peek(&mut peeked)
            .await
            .map_err(|_| ProxyError::Closed)?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let seen = &peeked[..n];
        let v2_prefix = &V2_SIGNATURE[..n.min(12)];
        if seen.starts_with(v2_prefix) && n < 12 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        if seen.starts_with(V2_SIGNATURE) {
            return read_v2(socket).await;
        }
        if !b"PROXY ".starts_with(&seen[..n.min(6)]) {
            return Err(ProxyError::Missing);
        }
        if let Some(end) = seen.windows(2).position(|w| w == b"\r\n") {
            let mut line = vec![0u8; end + 2];
            socket
                .read_exact(&mut line)
                .await
                .map_err(|_| ProxyError::Closed)?;
            return parse_v1(&line[..end]);
        }
        if n > V1_MAX {
            return Err(ProxyError::Malformed("v1 line too long"));
        }
        // Part of the line is here; wait for the rest (bounded by the timeout).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn read_v2(socket: &mut TcpStream) -> Result<ProxyHeader, ProxyError> {
    let mut head = [0u8; 16];
    socket
        .read_exact(&mut head)
        .await
        .map_err(|_| ProxyError::Closed)?;
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::Malformed("v2 header too long"));
    }
    let mut payload = vec![0u8; len];
    socket
        .read_exact(&mut payload)
        .await
        .map_err(|_| ProxyError::Closed)?;
    parse_v2(&head, &payload)
}

/// `PROXY TCP4 src dst sport dport` (without CRLF), or `PROXY UNKNOWN ...`.
pub fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("v1 not ASCII"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyError::Missing);
    }
    let proto = parts
        .next()
        .ok_or(ProxyError::Malformed("v1 protocol missing"))?;
    if proto == "UNKNOWN" {
        return Ok(ProxyHeader::Local);
    }
    let fields: Vec<&str> = parts.collect();
    if fields.len() != 4 {
        return Err(ProxyError::Malformed("v1 needs 4 address fields"));
    }
    let ip: IpAddr = fields[0]
        .parse()
        .map_err(|_| ProxyError::Malformed("v1 source address"))?;
    let _dst: IpAddr = fields[1]
        .parse()
        .map_err(|_| ProxyError::Malformed("v1 destination address"))?;
    let port: u16 = fields[2]
        .parse()
        .map_err(|_| ProxyError::Malformed("v1 source port"))?;
    let _dport: u16 = fields[3]
        .parse()
        .map_err(|_| ProxyError::Malformed("v1 destination port"))?;
    match (proto, ip) {
        ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => {
            Ok(ProxyHeader::Proxied(SocketAddr::new(ip, port)))
        }
        _ => Err(ProxyError::Malformed(
            "v1 protocol does not match the address",
        )),
    }
}

/// The binary v2 header: 16 bytes, then the address block and TLVs.
pub fn parse_v2(head: &[u8; 16], payload: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if &head[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    let version = head[12] >> 4;
    let command = head[12] & 0x0f;
    if version != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    match command {
        0 => return Ok(ProxyHeader::Local),
        1 => {}
        _ => return Err(ProxyError::Malformed("v2 command")),
    }
    let family = head[13] >> 4;
    // Addresses come first; TLVs after them are skipped.
    match family {
        1 if payload.len() >= 12 => {
            let ip = Ipv4Addr::new(payload[0], payload[1], payload[2], payload[3]);
            let port = u16::from_be_bytes([payload[8], payload[9]]);
            Ok(ProxyHeader::Proxied(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        2 if payload.len() >= 36 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&payload[..16]);
            let port = u16::from_be_bytes([payload[32], payload[33]]);
            Ok(ProxyHeader::Proxied(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(b)),
                port,
            )))
        }
        // AF_UNSPEC or AF_UNIX: no usable client address; treat as local.
        0 | 3 => Ok(ProxyHeader::Local),
        _ => Err(ProxyError::Malformed("v2 address block")),
    }
}

/// An address range, `10.0.0.0/8` or `::1/128` or a bare address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_forms() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110"),
            Ok(ProxyHeader::Proxied("192.0.2.7:40000".parse().unwrap()))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 995"),
            Ok(ProxyHeader::Proxied("[2001:db8::7]:40000".parse().unwrap()))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN"), Ok(ProxyHeader::Local));
        assert!(parse_v1(b"PROXY TCP4 2001:db8::7 1.2.3.4 1 2").is_err());
        assert!(parse_v1(b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2").is_err());
        assert!(parse_v1(b"PROXY TCP4 1.2.3.4").is_err());
        assert_eq!(parse_v1(b"USER bob"), Err(ProxyError::Missing));
    }

    fn v2(command: u8, family: u8, payload: &[u8]) -> ([u8; 16], Vec<u8>) {
        let mut head = [0u8; 16];
        head[..12].copy_from_slice(V2_SIGNATURE);
        head[12] = 0x20 | command;
        head[13] = family << 4 | 1;
        head[14..16].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        (head, payload.to_vec())
    }

    #[test]
    fn v2_forms() {
        let mut p = vec![192, 0, 2, 7, 198, 51, 100, 1];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&110u16.to_be_bytes());
        p.extend_from_slice(&[0x04, 0, 3, b'a', b'b', b'c']); // a TLV, skipped
        let (h, pl) = v2(1, 1, &p);
        assert_eq!(
            parse_v2(&h, &pl),
            Ok(ProxyHeader::Proxied("192.0.2.7:40000".parse().unwrap()))
        );
        let (h, pl) = v2(0, 0, &[]);
        assert_eq!(parse_v2(&h, &pl), Ok(ProxyHeader::Local));
        let (h, pl) = v2(1, 1, &[1, 2, 3]);
        assert!(parse_v2(&h, &pl).is_err());
        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[32..34].copy_from_slice(&5000u16.to_be_bytes());
        let (h, pl) = v2(1, 2, &six);
        assert_eq!(
            parse_v2(&h, &pl),
            Ok(ProxyHeader::Proxied("[::1]:5000".parse().unwrap()))
        );
    }

    #[test]
    fn cidrs() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    proptest::proptest! {
        /// Whatever a peer sends as a PROXY header, parsing answers; it
        /// never panics (also: `fuzz/fuzz_targets/proxy_header.rs`).
        #[test]
        fn parsers_never_panic(line in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
                               head in proptest::array::uniform16(proptest::num::u8::ANY),
                               payload in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = parse_v1(&line);
            let _ = parse_v2(&head, &payload);
            let mut signed = head;
            signed[..12].copy_from_slice(V2_SIGNATURE);
            let _ = parse_v2(&signed, &payload);
            let mut v1 = b"PROXY ".to_vec();
            v1.extend_from_slice(&line);
            let _ = parse_v1(&v1);
        }
    }
}
