//! Entry points for the fuzz targets (`crates/popgate-server/fuzz`), also
//! replayed over the committed inputs by `cargo test`. Not an API.

use crate::proxy::{parse_v1, parse_v2};

/// The PROXY v1 and v2 header parsers on arbitrary bytes: they answer (a
/// header or an error), never panic.
pub fn proxy_header(data: &[u8]) {
    let _ = parse_v1(data);
    if data.len() >= 16 {
        let mut head = [0u8; 16];
        head.copy_from_slice(&data[..16]);
        let _ = parse_v2(&head, &data[16..]);
        // With the signature in place, the parser gets past its first check.
        head[..12].copy_from_slice(b"\r\n\r\n\0\r\nQUIT\n");
        let _ = parse_v2(&head, &data[16..]);
    }
}
