//! RFC 2449 CAPA: what a session offers, as one value, listed in one place.

use crate::response;

/// RFC 2449 EXPIRE: how long the server keeps mail after retrieval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expire {
    /// Days.
    Days(u32),
    /// The server never deletes mail by itself.
    Never,
}

/// What CAPA lists for one session at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// USER/PASS is allowed now (plaintext login permitted on this connection).
    pub user: bool,
    /// SASL mechanisms offered now; empty: no SASL line.
    pub sasl: Vec<&'static str>,
    /// STLS is offered (a STARTTLS listener before the handshake).
    pub stls: bool,
    /// `IMPLEMENTATION` text; `None` hides it.
    pub implementation: Option<String>,
    pub expire: Option<Expire>,
    /// RFC 2449 LOGIN-DELAY, in seconds.
    pub login_delay: Option<u32>,
}

impl Capabilities {
    /// Appends the whole CAPA response.
    pub fn write(&self, out: &mut Vec<u8>) {
        response::ok(out, "Capability list follows");
        for fixed in ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"] {
            response::line(out, fixed);
        }
        if self.user {
            response::line(out, "USER");
        }
        if !self.sasl.is_empty() {
            response::line(out, &format!("SASL {}", self.sasl.join(" ")));
        }
        if self.stls {
            response::line(out, "STLS");
        }
        match self.expire {
            Some(Expire::Days(d)) => response::line(out, &format!("EXPIRE {d}")),
            Some(Expire::Never) => response::line(out, "EXPIRE NEVER"),
            None => {}
        }
        if let Some(d) = self.login_delay {
            response::line(out, &format!("LOGIN-DELAY {d}"));
        }
        if let Some(imp) = &self.implementation {
            response::line(out, &format!("IMPLEMENTATION {imp}"));
        }
        response::end(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_what_is_offered() {
        let mut out = Vec::new();
        Capabilities {
            user: true,
            sasl: vec!["PLAIN", "LOGIN"],
            stls: false,
            implementation: Some("popgate".into()),
            expire: Some(Expire::Never),
            login_delay: Some(300),
        }
        .write(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\n\
             SASL PLAIN LOGIN\r\nEXPIRE NEVER\r\nLOGIN-DELAY 300\r\nIMPLEMENTATION popgate\r\n.\r\n"
        );
    }

    #[test]
    fn hides_login_before_tls() {
        let mut out = Vec::new();
        Capabilities {
            stls: true,
            ..Default::default()
        }
        .write(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("STLS\r\n"));
        assert!(!text.contains("USER") && !text.contains("SASL"));
    }
}
