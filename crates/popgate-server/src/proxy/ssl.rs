//! PP2_TYPE_SSL, the TLV of a PROXY v2 header by which a TLS-terminating
//! balancer (haproxy's `send-proxy-v2-ssl`) says the client spoke TLS to it.
//!
//! Its value is one `client` byte of flags, a 32-bit `verify` result and
//! sub-TLVs (version, cipher, the client certificate's CN...). `verify` is
//! about a client certificate only: haproxy leaves it non-zero when the
//! client presented none. So a connection counts as TLS when `client` has
//! PP2_CLIENT_SSL and, if it says a client certificate was presented
//! (PP2_CLIENT_CERT_CONN or _SESS), `verify` is 0 (the certificate was
//! verified). Anything else, or a TLV list that does not parse, is not TLS:
//! a header that cannot be read says nothing about the client's transport.

const PP2_TYPE_SSL: u8 = 0x20;
const PP2_CLIENT_SSL: u8 = 0x01;
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// Whether the TLVs after the address block say the client spoke TLS to
/// the proxy (see the module's text). The first SSL TLV decides.
pub(super) fn client_tls(mut tlvs: &[u8]) -> bool {
    while tlvs.len() >= 3 {
        let kind = tlvs[0];
        let len = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        let Some(value) = tlvs.get(3..3 + len) else {
            return false;
        };
        if kind == PP2_TYPE_SSL {
            return ssl_value_says_tls(value);
        }
        tlvs = &tlvs[3 + len..];
    }
    false
}

fn ssl_value_says_tls(value: &[u8]) -> bool {
    let [client, v0, v1, v2, v3, ..] = *value else {
        return false;
    };
    let verify = u32::from_be_bytes([v0, v1, v2, v3]);
    let presented_cert = client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS) != 0;
    client & PP2_CLIENT_SSL != 0 && (!presented_cert || verify == 0)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An SSL TLV with these flags and verify result, and a version sub-TLV.
    pub(crate) fn ssl_tlv(client: u8, verify: u32) -> Vec<u8> {
        let mut value = vec![client];
        value.extend_from_slice(&verify.to_be_bytes());
        value.extend_from_slice(&[0x21, 0, 7]);
        value.extend_from_slice(b"TLSv1.3");
        let mut tlv = vec![PP2_TYPE_SSL];
        tlv.extend_from_slice(&(value.len() as u16).to_be_bytes());
        tlv.extend_from_slice(&value);
        tlv
    }

    #[test]
    fn client_ssl_without_a_client_certificate_is_tls() {
        // haproxy's send-proxy-v2-ssl for a client without a certificate:
        // PP2_CLIENT_SSL, verify left at 1.
        assert!(client_tls(&ssl_tlv(PP2_CLIENT_SSL, 1)));
        assert!(client_tls(&ssl_tlv(PP2_CLIENT_SSL, 0)));
    }

    #[test]
    fn a_presented_certificate_must_have_verified() {
        let both = PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS;
        assert!(client_tls(&ssl_tlv(both, 0)));
        assert!(!client_tls(&ssl_tlv(both, 20)));
        assert!(!client_tls(&ssl_tlv(
            PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS,
            1
        )));
    }

    #[test]
    fn without_the_client_ssl_bit_nothing_changes() {
        // send-proxy-v2-ssl on a plain-TCP frontend: the TLV, no SSL bit.
        assert!(!client_tls(&ssl_tlv(0, 1)));
        assert!(!client_tls(&ssl_tlv(PP2_CLIENT_CERT_CONN, 0)));
        assert!(!client_tls(&[]));
        // Other TLVs only (ALPN, authority).
        assert!(!client_tls(&[
            0x01, 0, 4, b'p', b'o', b'p', b'3', 0x02, 0, 1, b'x'
        ]));
    }

    #[test]
    fn the_ssl_tlv_is_found_after_others_and_the_first_decides() {
        let mut tlvs = vec![0x04, 0, 3, b'a', b'b', b'c'];
        tlvs.extend(ssl_tlv(PP2_CLIENT_SSL, 1));
        assert!(client_tls(&tlvs));
        let mut first_not = ssl_tlv(0, 1);
        first_not.extend(ssl_tlv(PP2_CLIENT_SSL, 1));
        assert!(!client_tls(&first_not));
    }

    #[test]
    fn truncated_tlvs_are_not_tls() {
        let whole = ssl_tlv(PP2_CLIENT_SSL, 1);
        for cut in 0..whole.len() {
            // Cut inside the TLV: its length overruns, or fewer than the
            // 5 bytes of flags and verify remain.
            let part = &whole[..cut];
            assert!(!client_tls(part), "cut at {cut}");
        }
        // A length that claims more than there is.
        assert!(!client_tls(&[
            PP2_TYPE_SSL,
            0xff,
            0xff,
            PP2_CLIENT_SSL,
            0,
            0,
            0,
            0
        ]));
        // An SSL TLV too short for flags and verify.
        assert!(!client_tls(&[PP2_TYPE_SSL, 0, 1, PP2_CLIENT_SSL]));
    }
}
