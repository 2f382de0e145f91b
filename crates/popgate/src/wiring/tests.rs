use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::*;

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Any JSON value, refused if an object in it has a key twice (serde_json's
/// own maps keep the last value silently). Keeps each object's keys.
enum Json {
    Object(Vec<(String, Json)>),
    Other,
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut fields: Vec<(String, Json)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    let value = map.next_value::<Json>()?;
                    fields.push((key, value));
                }
                Ok(Json::Object(fields))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                while seq.next_element::<Json>()?.is_some() {}
                Ok(Json::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Every key of a line, the span's prefixed with `span.`; fails on a
/// key that is there twice, also between the event and its span.
fn keys(line: &str) -> BTreeSet<String> {
    let Json::Object(fields) =
        serde_json::from_str::<Json>(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    else {
        panic!("not an object: {line}")
    };
    let mut out = BTreeSet::new();
    let mut top = BTreeSet::new();
    for (k, v) in &fields {
        top.insert(k.clone());
        out.insert(k.clone());
        if let (true, Json::Object(span)) = (k == "span", v) {
            for (sk, _) in span {
                out.insert(format!("span.{sk}"));
                if sk != "name" {
                    assert!(
                        !fields.iter().any(|(k, _)| k == sk),
                        "{sk} both in the event and its span: {line}"
                    );
                }
            }
        }
    }
    let _ = serde_json::from_str::<IgnoredAny>(line).unwrap();
    out
}

#[test]
fn json_lines_have_each_field_once() {
    let sink = Sink::default();
    let subscriber = json_subscriber(EnvFilter::new("info"), {
        let sink = sink.clone();
        move || sink.clone()
    });
    tracing::subscriber::with_default(subscriber, || {
        // The session's span and events, as popgate-server makes them.
        let span = tracing::info_span!(
            "session",
            id = "8f3a1c2e-000017",
            client = "192.0.2.7:40000",
            tenant = tracing::field::Empty,
            user = tracing::field::Empty,
        );
        let _in = span.enter();
        tracing::info!(
            user = "eve@acme.example",
            tenant = "acme",
            mechanism = "user",
            tls = false,
            "auth failed"
        );
        span.record("tenant", "acme");
        span.record("user", "bob@acme.example");
        tracing::info!(
            mechanism = "plain",
            tls = true,
            messages = 2,
            octets = 300,
            "login"
        );
        tracing::info!(tls = true, commands = 4, outcome = "quit", "session end");
    });
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let login = keys(lines[1]);
    for k in [
        "message",
        "level",
        "timestamp",
        "target",
        "mechanism",
        "tls",
        "span.id",
        "span.client",
        "span.tenant",
        "span.user",
        "span.name",
    ] {
        assert!(login.contains(k), "{k} missing: {}", lines[1]);
    }
    assert!(!login.contains("spans"), "{}", lines[1]);
    let end = keys(lines[2]);
    assert!(
        end.contains("span.user") && end.contains("outcome"),
        "{}",
        lines[2]
    );
    // Before the span's tenant and user are known, the failed login
    // names the attempted account in the event, the span has neither.
    let failed = keys(lines[0]);
    assert!(
        failed.contains("user") && !failed.contains("span.user"),
        "{}",
        lines[0]
    );
}
