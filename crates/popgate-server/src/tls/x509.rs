//! Just enough DER to read a certificate's expiry and subject CN, for the
//! certificate-expiry metric: the certificate is the operator's own file,
//! already accepted by rustls; anything this reader does not follow gives
//! `None` (no metric for it), never an error.
//!
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
//! serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter },
//! subject, ... }, ... }

/// What the metric says of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    /// notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The subject's common name, empty when it has none.
    pub common_name: String,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;
/// 2.5.4.3, id-at-commonName.
const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

/// Reads a DER certificate.
pub fn leaf_info(der: &[u8]) -> Option<LeafInfo> {
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    if tbs.first() == Some(&VERSION) {
        tbs = tlv(tbs)?.2;
    }
    let rest = tlv(tbs)?.2; // serialNumber
    let rest = tlv(rest)?.2; // signature
    let rest = tlv(rest)?.2; // issuer
    let (tag, validity, rest) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, after_not_before) = tlv(validity)?;
    let (tag, not_after, _) = tlv(after_not_before)?;
    let not_after = time(tag, not_after)?;
    let (tag, subject, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    Some(LeafInfo {
        not_after,
        common_name: common_name(subject).unwrap_or_default(),
    })
}

/// One DER element: its tag, its contents, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The first CN of a Name (SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (tag, mut set, rest) = tlv(name)?;
        name = rest;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (_, attribute, rest) = tlv(set)?;
            set = rest;
            let (tag, oid, value) = tlv(attribute)?;
            if tag == OID && oid == CN_OID {
                let (_, text, _) = tlv(value)?;
                return Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    None
}

/// UTCTime `YYMMDDHHMMSSZ` (RFC 5280: years 1950-2049) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`, as seconds since the epoch.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 13 => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 3650
    /// -subj /CN=pop.acme.example` (the key was thrown away): notAfter
    /// Nov 28 13:28:06 2036 GMT, by `openssl x509 -enddate`.
    const CERT: &str = include_str!("x509_test_cert.pem");
    const CERT_NOT_AFTER: i64 = 2_111_491_686;

    #[test]
    fn reads_expiry_and_common_name_of_a_real_certificate() {
        let der = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let info = leaf_info(der.as_ref()).unwrap();
        assert_eq!(info.common_name, "pop.acme.example");
        assert_eq!(info.not_after, CERT_NOT_AFTER);
    }

    #[test]
    fn times_in_both_forms() {
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            time(GENERALIZED_TIME, b"20500101000000Z"),
            Some(2_524_608_000)
        );
        assert_eq!(
            time(GENERALIZED_TIME, b"20240229120000Z"),
            Some(1_709_208_000)
        );
        assert_eq!(time(UTC_TIME, b"701301000000Z"), None);
        assert_eq!(time(UTC_TIME, b"7001010000Z"), None);
        assert_eq!(time(UTC_TIME, b"700101000000+"), None);
    }

    #[test]
    fn garbage_and_truncation_give_none() {
        let der = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let der = der.as_ref();
        for cut in 0..der.len() {
            // Cut anywhere before the subject ends: nothing, never a panic.
            let _ = leaf_info(&der[..cut]);
        }
        assert_eq!(leaf_info(&[]), None);
        assert_eq!(leaf_info(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(leaf_info(b"not a certificate"), None);
    }
}
