use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

/// Parses the text exposition into `name{sorted labels}` → value, checking
/// the format on the way: every sample belongs to a family announced with
/// HELP and TYPE.
pub(crate) fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut families: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            families.push((name.to_string(), String::new()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let last = families.last_mut().expect("TYPE after HELP");
            assert_eq!(last.0, name, "TYPE for the family just announced");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            last.1 = kind.to_string();
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "unexpected line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels: Vec<&str> = if body.is_empty() {
                    vec![]
                } else {
                    body.split(',').collect()
                };
                for l in &labels {
                    let (k, v) = l.split_once('=').expect("label=value");
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
                }
                labels.sort();
                (name, labels.join(","))
            }
            None => (series, String::new()),
        };
        let (family, kind) = families.last().expect("sample after HELP/TYPE");
        let belongs = match kind.as_str() {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name.to_string()),
            _ => name == family,
        };
        assert!(belongs, "{name} is not part of family {family}");
        assert!(
            name.starts_with("popgate_") || name.starts_with("process_"),
            "{name}"
        );
        let key = if labels.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{labels}}}")
        };
        assert!(
            samples.insert(key, value).is_none(),
            "duplicate series in {line:?}"
        );
    }
    samples
}

fn value(m: &Metrics, key: &str) -> f64 {
    parse(&m.render()).get(key).copied().unwrap_or(0.0)
}

fn summary(tenant: Option<&str>, outcome: Outcome) -> SessionSummary {
    SessionSummary {
        id: popgate_server::SessionId::next(),
        client: SocketAddr::from(([192, 0, 2, 7], 40000)),
        tenant: tenant.map(String::from),
        user: Some("bob@acme.example".into()),
        commands: 5,
        bytes_sent: 1234,
        retrieved: 2,
        deleted: 1,
        duration: Duration::from_millis(2500),
        outcome,
        logged_in: tenant.is_some(),
    }
}

#[test]
fn a_fresh_registry_has_build_info_and_zeroed_series() {
    let m = Metrics::new("1.2.3", ["acme", "globex"]);
    let s = parse(&m.render());
    assert_eq!(s["popgate_build_info{version=\"1.2.3\"}"], 1.0);
    assert_eq!(s["popgate_sessions_active"], 0.0);
    assert_eq!(s["popgate_connections_accepted_total"], 0.0);
    for o in Outcome::ALL {
        assert_eq!(
            s[&format!("popgate_sessions_total{{outcome=\"{}\"}}", o.as_str())],
            0.0
        );
    }
    for t in ["acme", "globex"] {
        assert_eq!(
            s[&format!("popgate_messages_retrieved_total{{tenant=\"{t}\"}}")],
            0.0
        );
        assert_eq!(
            s[&format!("popgate_locks_lost_total{{tenant=\"{t}\"}}")],
            0.0
        );
        assert_eq!(
            s[&format!("popgate_lock_acquisitions_total{{result=\"in_use\",tenant=\"{t}\"}}")],
            0.0
        );
    }
}

#[test]
fn a_session_moves_its_series() {
    let m = Metrics::new("0.1.0", ["acme"]);
    m.connection_accepted();
    m.session_started();
    assert_eq!(value(&m, "popgate_sessions_active"), 1.0);
    m.command(None, "USER", true);
    m.command(None, "PASS", false);
    m.login(Some("acme"), "user", "failed");
    m.login(Some("acme"), "user", "ok");
    m.lock("acme", "ok");
    m.store_operation("maildir", "open", Duration::from_millis(3), None);
    m.store_operation(
        "maildir",
        "fetch",
        Duration::from_millis(7),
        Some("temporary"),
    );
    m.bytes_sent(None, 34);
    m.command(Some("acme"), "RETR", true);
    // Counted as the writes complete, before the session ends.
    m.bytes_sent(Some("acme"), 65536);
    m.bytes_sent(Some("acme"), 1200);
    assert_eq!(
        value(&m, "popgate_sent_bytes_total{tenant=\"acme\"}"),
        66736.0
    );
    m.session_ended(&summary(Some("acme"), Outcome::Quit));

    let s = parse(&m.render());
    assert_eq!(s["popgate_connections_accepted_total"], 1.0);
    assert_eq!(s["popgate_sessions_active"], 0.0);
    assert_eq!(s["popgate_sessions_total{outcome=\"quit\"}"], 1.0);
    assert_eq!(
        s["popgate_session_duration_seconds_count{outcome=\"quit\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_session_duration_seconds_sum{outcome=\"quit\"}"],
        2.5
    );
    assert_eq!(
        s["popgate_session_duration_seconds_bucket{le=\"1\",outcome=\"quit\"}"],
        0.0
    );
    assert_eq!(
        s["popgate_session_duration_seconds_bucket{le=\"5\",outcome=\"quit\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_commands_total{command=\"USER\",result=\"ok\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_commands_total{command=\"PASS\",result=\"err\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_commands_total{command=\"RETR\",result=\"ok\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_logins_total{mechanism=\"user\",result=\"failed\",tenant=\"acme\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_logins_total{mechanism=\"user\",result=\"ok\",tenant=\"acme\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_lock_acquisitions_total{result=\"ok\",tenant=\"acme\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_store_operation_duration_seconds_count{backend=\"maildir\",op=\"open\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_store_operation_duration_seconds_count{backend=\"maildir\",op=\"fetch\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_store_errors_total{backend=\"maildir\",kind=\"temporary\",op=\"fetch\"}"],
        1.0
    );
    assert!(!s.contains_key(
        "popgate_store_errors_total{backend=\"maildir\",kind=\"temporary\",op=\"open\"}"
    ));
    // The end adds nothing: its bytes were counted as they were written.
    assert_eq!(s["popgate_sent_bytes_total{tenant=\"acme\"}"], 66736.0);
    assert_eq!(s["popgate_sent_bytes_total{tenant=\"-\"}"], 34.0);
    assert_eq!(s["popgate_messages_retrieved_total{tenant=\"acme\"}"], 2.0);
    assert_eq!(s["popgate_messages_deleted_total{tenant=\"acme\"}"], 1.0);
}

#[test]
fn unknown_tenants_and_users_never_become_labels() {
    let m = Metrics::new("0.1.0", ["acme"]);
    m.login(Some("evil-domain.example"), "plain", "failed");
    m.login(None, "user", "failed");
    m.lock("not-configured", "error");
    m.session_started();
    m.bytes_sent(Some("not-configured"), 2000);
    m.bytes_sent(None, 468);
    m.session_ended(&summary(Some("not-configured"), Outcome::Abuse));
    m.session_started();
    m.session_ended(&summary(None, Outcome::Dropped));
    let text = m.render();
    assert!(!text.contains("evil"), "{text}");
    assert!(!text.contains("not-configured"), "{text}");
    assert!(!text.contains("bob"), "{text}");
    assert!(!text.contains("192.0.2.7"), "{text}");
    let s = parse(&text);
    assert_eq!(
        s["popgate_logins_total{mechanism=\"plain\",result=\"failed\",tenant=\"-\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_logins_total{mechanism=\"user\",result=\"failed\",tenant=\"-\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_lock_acquisitions_total{result=\"error\",tenant=\"-\"}"],
        1.0
    );
    assert_eq!(s["popgate_sent_bytes_total{tenant=\"-\"}"], 2468.0);
    assert_eq!(s["popgate_sessions_total{outcome=\"abuse\"}"], 1.0);
    assert_eq!(s["popgate_sessions_total{outcome=\"dropped\"}"], 1.0);
}

#[test]
fn caps_are_gauges_and_only_configured_tenants_get_one() {
    let m = Metrics::new("0.1.0", ["acme", "globex"]);
    m.set_connection_caps(10_000, 50);
    m.set_tenant_session_cap("acme", 300);
    m.set_tenant_session_cap("not-configured", 7);
    let s = parse(&m.render());
    assert_eq!(s["popgate_connections_max"], 10_000.0);
    assert_eq!(s["popgate_connections_per_ip_max"], 50.0);
    assert_eq!(s["popgate_tenant_sessions_max{tenant=\"acme\"}"], 300.0);
    // globex has no cap: no series, so a ratio alert skips it.
    assert!(
        !s.keys()
            .any(|k| k.starts_with("popgate_tenant_sessions_max{tenant=\"globex"))
    );
    assert!(!m.render().contains("not-configured"));
}

#[test]
fn hooks_for_later_features_move_their_series() {
    let m = Metrics::new("0.1.0", ["acme"]);
    m.tls_handshake("starttls");
    m.tls_handshake("implicit");
    m.tls_handshake_failed("implicit", "protocol");
    m.proxy_header_error("malformed");
    m.connection_rejected("too_many_connections");
    m.lock_lost("acme");
    m.login_penalty(Duration::from_millis(1500));
    let s = parse(&m.render());
    assert_eq!(s["popgate_tls_handshakes_total{kind=\"starttls\"}"], 1.0);
    assert_eq!(s["popgate_tls_handshakes_total{kind=\"implicit\"}"], 1.0);
    assert_eq!(
        s["popgate_tls_handshake_failures_total{kind=\"implicit\",reason=\"protocol\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_proxy_header_errors_total{reason=\"malformed\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_connections_rejected_total{reason=\"too_many_connections\"}"],
        1.0
    );
    assert_eq!(s["popgate_locks_lost_total{tenant=\"acme\"}"], 1.0);
    assert_eq!(s["popgate_login_penalty_delay_seconds_count"], 1.0);
    assert_eq!(
        s["popgate_login_penalty_delay_seconds_bucket{le=\"2\"}"],
        1.0
    );
    assert_eq!(
        s["popgate_login_penalty_delay_seconds_bucket{le=\"1\"}"],
        0.0
    );
}

/// Every family, with every hook fired once, passes `promtool check metrics`
/// (Debian's `prometheus` package; `scripts/test` installs it).
#[test]
fn promtool_finds_nothing_to_complain_about() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let m = Metrics::new("0.1.0", ["acme"]);
    m.connection_accepted();
    m.connection_rejected("too_many_connections");
    m.session_started();
    m.command(None, "CAPA", true);
    m.login(Some("acme"), "plain", "ok");
    m.lock("acme", "ok");
    m.lock_lost("acme");
    m.store_operation(
        "maildir",
        "open",
        Duration::from_millis(1),
        Some("permanent"),
    );
    m.session_ended(&summary(Some("acme"), Outcome::LockLost));
    m.tls_handshake("starttls");
    m.tls_handshake_failed("starttls", "timeout");
    m.proxy_header_error("untrusted");
    m.login_penalty(Duration::from_secs(1));
    m.tenant_store_error("acme", "open");
    m.set_ready(true);
    let text = m.render();

    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: promtool is not installed ({e}); apt-get install prometheus");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool says:\n{report}\non:\n{text}"
    );
}

#[test]
fn the_operators_first_metrics_are_there_from_the_start() {
    let m = Metrics::new("0.1.0", ["acme", "globex"]);
    let s = parse(&m.render());
    assert_eq!(s["popgate_ready"], 0.0);
    assert_eq!(
        s["popgate_password_hashing_slots"], 0.0,
        "no pool watched yet"
    );
    assert_eq!(s["popgate_password_hashing_slots_busy"], 0.0);
    assert_eq!(s["popgate_password_hashing_waiting"], 0.0);
    for t in ["acme", "globex", "-"] {
        assert_eq!(
            s[&format!("popgate_tenant_sessions_active{{tenant=\"{t}\"}}")],
            0.0
        );
    }
    for t in ["acme", "globex"] {
        for op in ["open", "fetch", "expunge"] {
            assert_eq!(
                s[&format!("popgate_tenant_store_errors_total{{op=\"{op}\",tenant=\"{t}\"}}")],
                0.0
            );
        }
    }
    #[cfg(target_os = "linux")]
    {
        assert!(s["process_resident_memory_bytes"] > 1e6, "{s:?}");
        assert!(s["process_virtual_memory_bytes"] >= s["process_resident_memory_bytes"]);
        assert!(s["process_open_fds"] >= 3.0);
        assert!(s["process_max_fds"] >= s["process_open_fds"]);
        assert!(s["process_cpu_seconds_total"] >= 0.0);
        assert!(s["process_start_time_seconds"] > 1.5e9);
    }
    m.set_ready(true);
    assert_eq!(value(&m, "popgate_ready"), 1.0);
}

#[test]
fn sessions_by_tenant_move_at_login_and_add_up() {
    let m = Metrics::new("0.1.0", ["acme"]);
    let by = |m: &Metrics, t: &str| {
        value(
            m,
            &format!("popgate_tenant_sessions_active{{tenant=\"{t}\"}}"),
        )
    };
    m.session_started();
    m.session_started();
    m.session_started();
    assert_eq!((by(&m, "-"), by(&m, "acme")), (3.0, 0.0));
    m.login(Some("acme"), "user", "failed");
    m.login(Some("acme"), "plain", "in_use");
    m.login(Some("acme"), "user", "ok");
    assert_eq!((by(&m, "-"), by(&m, "acme")), (2.0, 1.0));
    assert_eq!(value(&m, "popgate_sessions_active"), 3.0);
    // Logged in and ended; verified but refused (tenant set, not logged
    // in) and ended; never logged in and ended.
    m.session_ended(&summary(Some("acme"), Outcome::Quit));
    let mut refused = summary(Some("acme"), Outcome::Dropped);
    refused.logged_in = false;
    m.session_ended(&refused);
    m.session_ended(&summary(None, Outcome::Dropped));
    assert_eq!((by(&m, "-"), by(&m, "acme")), (0.0, 0.0));
    assert_eq!(value(&m, "popgate_sessions_active"), 0.0);
}

#[test]
fn store_errors_are_counted_by_tenant_too() {
    let m = Metrics::new("0.1.0", ["acme"]);
    m.tenant_store_error("acme", "fetch");
    m.tenant_store_error("acme", "fetch");
    m.tenant_store_error("not-configured", "open");
    let s = parse(&m.render());
    assert_eq!(
        s["popgate_tenant_store_errors_total{op=\"fetch\",tenant=\"acme\"}"],
        2.0
    );
    assert_eq!(
        s["popgate_tenant_store_errors_total{op=\"open\",tenant=\"-\"}"],
        1.0
    );
    assert!(!m.render().contains("not-configured"));
}

#[tokio::test]
async fn the_hashing_pool_is_read_at_each_scrape() {
    use popgate_auth::{HashPool, HashPoolConfig};
    let m = Metrics::new("0.1.0", ["acme"]);
    let pool = HashPool::new(HashPoolConfig {
        slots: 3,
        ..HashPoolConfig::default()
    });
    m.watch_hashing(pool.clone());
    let s = parse(&m.render());
    assert_eq!(s["popgate_password_hashing_slots"], 3.0);
    assert_eq!(s["popgate_password_hashing_slots_busy"], 0.0);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let hashing = pool.for_tenant("acme");
    let check = tokio::spawn(async move { hashing.run(move || rx.recv().is_ok()).await });
    while pool.busy() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(value(&m, "popgate_password_hashing_slots_busy"), 1.0);
    tx.send(()).unwrap();
    check.await.unwrap().unwrap();
    assert_eq!(value(&m, "popgate_password_hashing_slots_busy"), 0.0);
}
