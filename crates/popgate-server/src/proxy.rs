//! PROXY protocol v1 and v2 (haproxy's spec): the load balancer tells us
//! the real client address before the POP3 bytes start.
//!
//! The header is read into a small buffer under a deadline and parsed from
//! it. Whatever arrived after the header (a pipelined POP3 command, the
//! start of a TLS ClientHello) is handed on in a [`Prefixed`] stream, which
//! yields those bytes first and then reads the socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

mod ssl;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;
/// Larger v2 headers (many TLVs) are refused rather than buffered.
const V2_MAX_PAYLOAD: usize = 4096;

/// What the header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection from this client.
    Proxied(SocketAddr),
    /// A proxied connection from this client, which spoke TLS to the proxy
    /// (v2 with PP2_TYPE_SSL: see `proxy/ssl.rs`). Honoured only because the
    /// header comes from a trusted proxy.
    ProxiedTls(SocketAddr),
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

/// Reads the PROXY header from a fresh connection, within `timeout`.
/// Returns the header and the bytes that arrived after it, which belong to
/// the next layer (see [`Prefixed`]).
pub async fn read_header<S: AsyncRead + Unpin>(
    socket: &mut S,
    timeout: Duration,
) -> Result<(ProxyHeader, Vec<u8>), ProxyError> {
    match tokio::time::timeout(timeout, read_inner(socket)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout),
    }
}

async fn read_inner<S: AsyncRead + Unpin>(
    socket: &mut S,
) -> Result<(ProxyHeader, Vec<u8>), ProxyError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = socket
            .read(&mut chunk)
            .await
            .map_err(|_| ProxyError::Closed)?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((header, used)) = parse_buffered(&buf)? {
            buf.drain(..used);
            return Ok((header, buf));
        }
    }
}

/// Parses a header from the start of `buf`: `Ok(None)` while more bytes
/// are needed, else the header and how many bytes it took.
fn parse_buffered(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let n = buf.len();
    if n < 12 && buf.starts_with(&V2_SIGNATURE[..n]) {
        return Ok(None);
    }
    if buf.starts_with(V2_SIGNATURE) {
        if n < 16 {
            return Ok(None);
        }
        let head: &[u8; 16] = buf[..16].try_into().expect("16 bytes");
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        if len > V2_MAX_PAYLOAD {
            return Err(ProxyError::Malformed("v2 header too long"));
        }
        if n < 16 + len {
            return Ok(None);
        }
        return parse_v2(head, &buf[16..16 + len]).map(|h| Some((h, 16 + len)));
    }
    if !b"PROXY ".starts_with(&buf[..n.min(6)]) {
        return Err(ProxyError::Missing);
    }
    let window = &buf[..n.min(V1_MAX + 1)];
    if let Some(end) = window.windows(2).position(|w| w == b"\r\n") {
        return parse_v1(&buf[..end]).map(|h| Some((h, end + 2)));
    }
    if n > V1_MAX {
        return Err(ProxyError::Malformed("v1 line too long"));
    }
    Ok(None)
}

/// A stream that yields `prefix` (bytes already read from `inner`) before
/// reading `inner` itself; writes go straight to `inner`.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
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
    // Addresses come first, then the TLVs; of those only PP2_TYPE_SSL counts.
    let (client, tlvs) = match family {
        1 if payload.len() >= 12 => {
            let ip = Ipv4Addr::new(payload[0], payload[1], payload[2], payload[3]);
            let port = u16::from_be_bytes([payload[8], payload[9]]);
            (SocketAddr::new(IpAddr::V4(ip), port), &payload[12..])
        }
        2 if payload.len() >= 36 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&payload[..16]);
            let port = u16::from_be_bytes([payload[32], payload[33]]);
            let ip = IpAddr::V6(Ipv6Addr::from(b));
            (SocketAddr::new(ip, port), &payload[36..])
        }
        // AF_UNSPEC or AF_UNIX: no usable client address; treat as local.
        0 | 3 => return Ok(ProxyHeader::Local),
        _ => return Err(ProxyError::Malformed("v2 address block")),
    };
    if ssl::client_tls(tlvs) {
        Ok(ProxyHeader::ProxiedTls(client))
    } else {
        Ok(ProxyHeader::Proxied(client))
    }
}

/// An address range, `10.0.0.0/8` or `::1/128` or a bare address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

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
        let net = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .and_then(|p| ipnet::IpNet::new(addr, p).ok())
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => ipnet::IpNet::from(addr),
        };
        Ok(Cidr(net))
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
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
    fn v2_ssl_tlv_marks_the_client_tls() {
        use ssl::tests::ssl_tlv;
        let mut p = vec![192, 0, 2, 7, 198, 51, 100, 1];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&110u16.to_be_bytes());
        let mut tls = p.clone();
        tls.extend_from_slice(&[0x01, 0, 4, b'p', b'o', b'p', b'3']); // ALPN first
        tls.extend(ssl_tlv(0x01, 1));
        let (h, pl) = v2(1, 1, &tls);
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        assert_eq!(parse_v2(&h, &pl), Ok(ProxyHeader::ProxiedTls(client)));
        // The TLV without PP2_CLIENT_SSL: plain.
        let mut plain = p.clone();
        plain.extend(ssl_tlv(0x00, 1));
        let (h, pl) = v2(1, 1, &plain);
        assert_eq!(parse_v2(&h, &pl), Ok(ProxyHeader::Proxied(client)));
        // The SSL bytes inside the address block are no TLV.
        let (h, pl) = v2(1, 1, &ssl_tlv(0x01, 1)[..8]);
        assert!(parse_v2(&h, &pl).is_err());
        // IPv6, and LOCAL with the TLV stays LOCAL.
        let mut six = vec![0u8; 36];
        six[15] = 1;
        six[32..34].copy_from_slice(&5000u16.to_be_bytes());
        six.extend(ssl_tlv(0x01, 0));
        let (h, pl) = v2(1, 2, &six);
        assert_eq!(
            parse_v2(&h, &pl),
            Ok(ProxyHeader::ProxiedTls("[::1]:5000".parse().unwrap()))
        );
        let (h, pl) = v2(0, 1, &tls);
        assert_eq!(parse_v2(&h, &pl), Ok(ProxyHeader::Local));
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
        let host_bits: Cidr = "192.168.7.9/16".parse().unwrap();
        assert!(host_bits.contains("192.168.200.1".parse().unwrap()));
        assert!(!host_bits.contains("::ffff:192.169.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
        assert_eq!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err("\"10.0.0.0/x\": bad prefix length".to_string())
        );
        assert_eq!(
            "nonsense/8".parse::<Cidr>(),
            Err("\"nonsense/8\" is not an address or CIDR range".to_string())
        );
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    async fn through(pieces: Vec<Vec<u8>>) -> (Result<ProxyHeader, ProxyError>, Vec<u8>) {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for p in pieces {
                client.write_all(&p).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let (header, rest) = match read_header(&mut server, Duration::from_secs(5)).await {
            Ok(x) => x,
            Err(e) => return (Err(e), Vec::new()),
        };
        writer.await.unwrap();
        let mut stream = Prefixed::new(rest, server);
        let mut seen = Vec::new();
        stream.read_to_end(&mut seen).await.unwrap();
        (Ok(header), seen)
    }

    #[tokio::test(start_paused = true)]
    async fn header_and_command_in_one_write() {
        let (h, seen) = through(vec![
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\r\nCAPA\r\n".to_vec(),
        ])
        .await;
        assert_eq!(
            h,
            Ok(ProxyHeader::Proxied("192.0.2.7:40000".parse().unwrap()))
        );
        assert_eq!(seen, b"CAPA\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn header_split_over_writes() {
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 995\r\nUSER bob\r\n";
        let pieces = line.chunks(5).map(<[u8]>::to_vec).collect();
        let (h, seen) = through(pieces).await;
        assert_eq!(
            h,
            Ok(ProxyHeader::Proxied("[2001:db8::7]:40000".parse().unwrap()))
        );
        assert_eq!(seen, b"USER bob\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn v2_with_tlvs_then_data() {
        let mut p = vec![192, 0, 2, 7, 198, 51, 100, 1];
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&995u16.to_be_bytes());
        p.extend_from_slice(&[0x04, 0, 3, b'a', b'b', b'c']); // a TLV, skipped
        p.extend_from_slice(&[0x01, 0, 4, b'p', b'o', b'p', b'3']); // ALPN, skipped
        let (h, pl) = v2(1, 1, &p);
        let mut wire = h.to_vec();
        wire.extend_from_slice(&pl);
        wire.extend_from_slice(b"CAPA\r\nQUIT\r\n");
        // In one write, and a byte or three at a time.
        for size in [wire.len(), 3, 1] {
            let pieces = wire.chunks(size).map(<[u8]>::to_vec).collect();
            let (h, seen) = through(pieces).await;
            assert_eq!(
                h,
                Ok(ProxyHeader::Proxied("192.0.2.7:40000".parse().unwrap()))
            );
            assert_eq!(seen, b"CAPA\r\nQUIT\r\n", "in pieces of {size}");
        }
        let (h, pl) = v2(0, 0, &[]);
        let mut wire = h.to_vec();
        wire.extend_from_slice(&pl);
        wire.extend_from_slice(b"NOOP\r\n");
        assert_eq!(
            through(vec![wire]).await,
            (Ok(ProxyHeader::Local), b"NOOP\r\n".to_vec())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals() {
        assert_eq!(
            through(vec![b"USER bob\r\n".to_vec()]).await.0,
            Err(ProxyError::Missing)
        );
        assert_eq!(
            through(vec![vec![b'P'; 200]]).await.0,
            Err(ProxyError::Missing)
        );
        let mut long = b"PROXY ".to_vec();
        long.extend_from_slice(&[b'x'; 150]);
        assert_eq!(
            through(vec![long]).await.0,
            Err(ProxyError::Malformed("v1 line too long"))
        );
        let (mut h, _) = v2(1, 1, &[]);
        h[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            through(vec![h.to_vec()]).await.0,
            Err(ProxyError::Malformed("v2 header too long"))
        );
        // Half a header, then the peer goes away.
        assert_eq!(
            through(vec![b"PROXY TCP4 1.2".to_vec()]).await.0,
            Err(ProxyError::Closed)
        );
        // A peer that stays and says nothing: the deadline.
        let (_client, mut server) = tokio::io::duplex(64);
        assert_eq!(
            read_header(&mut server, Duration::from_secs(5)).await,
            Err(ProxyError::Timeout)
        );
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
