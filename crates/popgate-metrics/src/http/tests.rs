use std::sync::Mutex;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

struct Fake(Mutex<Result<(), String>>);

#[async_trait]
impl Readiness for Fake {
    async fn check(&self) -> Result<(), String> {
        self.0.lock().unwrap().clone()
    }
}

fn exporter(token: Option<&str>) -> (Exporter, Arc<Fake>) {
    let fake = Arc::new(Fake(Mutex::new(Ok(()))));
    let metrics = Arc::new(Metrics::new("0.1.0", ["acme"]));
    (
        Exporter::new(metrics, fake.clone()).bearer_token(token.map(String::from)),
        fake,
    )
}

async fn get(e: &Exporter, head: &str) -> Response {
    e.respond(head.as_bytes()).await
}

#[tokio::test]
async fn routes_and_methods() {
    let (e, _) = exporter(None);
    let r = get(&e, "GET /metrics HTTP/1.1\r\nHost: x").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "text/plain; version=0.0.4");
    assert!(
        r.body.contains("popgate_build_info{version=\"0.1.0\"} 1"),
        "{}",
        r.body
    );
    assert_eq!(get(&e, "GET /metrics?x=1 HTTP/1.0").await.status, 200);
    let r = get(&e, "GET /healthz HTTP/1.1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(get(&e, "GET /readyz HTTP/1.1").await.status, 200);
    assert_eq!(get(&e, "GET / HTTP/1.1").await.status, 404);
    assert_eq!(get(&e, "GET /metrics/x HTTP/1.1").await.status, 404);
    let r = get(&e, "POST /metrics HTTP/1.1\r\nContent-Length: 0").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers, vec![("Allow", "GET")]);
    assert_eq!(get(&e, "HEAD /healthz HTTP/1.1").await.status, 405);
    assert_eq!(get(&e, "GET /metrics").await.status, 400);
    assert_eq!(get(&e, "GET /metrics SMTP/1.0").await.status, 400);
    assert_eq!(get(&e, "GET http://x/metrics HTTP/1.1").await.status, 400);
    assert_eq!(get(&e, "").await.status, 400);
    assert_eq!(e.respond(b"GET /\xff HTTP/1.1").await.status, 400);
}

#[tokio::test]
async fn readyz_names_the_failing_check() {
    let (e, fake) = exporter(None);
    *fake.0.lock().unwrap() = Err("draining".into());
    let r = get(&e, "GET /readyz HTTP/1.1").await;
    assert_eq!((r.status, r.body.as_str()), (503, "not ready: draining\n"));
    // Health is about the process, not its dependencies.
    assert_eq!(get(&e, "GET /healthz HTTP/1.1").await.status, 200);
}

#[tokio::test]
async fn popgate_ready_follows_the_readiness_at_each_scrape() {
    let (e, fake) = exporter(None);
    let ready = |body: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix("popgate_ready "))
            .map(str::to_owned)
    };
    let r = get(&e, "GET /metrics HTTP/1.1").await;
    assert_eq!(ready(&r.body).as_deref(), Some("1"), "{}", r.body);
    *fake.0.lock().unwrap() = Err("draining".into());
    let r = get(&e, "GET /metrics HTTP/1.1").await;
    assert_eq!(ready(&r.body).as_deref(), Some("0"));
    *fake.0.lock().unwrap() = Ok(());
    let r = get(&e, "GET /metrics HTTP/1.1").await;
    assert_eq!(ready(&r.body).as_deref(), Some("1"));
}

#[tokio::test]
async fn bearer_token_guards_metrics_only() {
    let (e, _) = exporter(Some("s3cret"));
    assert_eq!(get(&e, "GET /metrics HTTP/1.1").await.status, 401);
    let r = get(&e, "GET /metrics HTTP/1.1\r\nAuthorization: Bearer nope").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers,
        vec![("WWW-Authenticate", "Bearer realm=\"popgate\"")]
    );
    assert_eq!(
        get(&e, "GET /metrics HTTP/1.1\r\nAuthorization: Basic s3cret")
            .await
            .status,
        401
    );
    assert_eq!(
        get(&e, "GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cretX")
            .await
            .status,
        401
    );
    assert_eq!(
        get(&e, "GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cret")
            .await
            .status,
        200
    );
    assert_eq!(
        get(
            &e,
            "GET /metrics HTTP/1.1\r\nHost: a\r\nauthorization:  bearer s3cret "
        )
        .await
        .status,
        200
    );
    assert_eq!(get(&e, "GET /healthz HTTP/1.1").await.status, 200);
    assert_eq!(get(&e, "GET /readyz HTTP/1.1").await.status, 200);
    // An empty token in the configuration means no token.
    let (open, _) = exporter(Some(""));
    assert_eq!(get(&open, "GET /metrics HTTP/1.1").await.status, 200);
}

async fn start() -> std::net::SocketAddr {
    let (e, _) = exporter(None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(e.serve(listener));
    addr
}

async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn over_tcp() {
    let addr = start().await;
    let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
    assert!(
        body.contains("# TYPE popgate_sessions_active gauge"),
        "{body}"
    );

    // Bare LF line ends, the head split over several writes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /hea").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(b"lthz HTTP/1.0\n\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("\r\n\r\nok\n"),
        "{out}"
    );

    // A head larger than the cap is refused, whether or not it ever ends.
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_REQUEST_HEAD));
    let r = exchange(addr, &big).await;
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    big.extend_from_slice(b"\r\n\r\n");
    let r = exchange(addr, &big).await;
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

    // A client that connects and leaves gets nothing, and breaks nothing.
    drop(TcpStream::connect(addr).await.unwrap());
    let r = exchange(addr, b"GET /readyz HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
}

#[tokio::test]
async fn idle_connections_cannot_starve_the_probes() {
    let addr = start().await;
    // Twice as many silent connections as may wait, all kept open.
    let mut idle = Vec::new();
    for _ in 0..2 * MAX_WAITING {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // A probe still gets its answer, at once.
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n"),
    )
    .await
    .expect("/healthz answered while idle connections were open");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(started.elapsed() < READ_TIMEOUT, "{:?}", started.elapsed());
    // The oldest silent connections were closed to make room.
    let mut closed = 0;
    for s in idle.iter_mut().take(MAX_WAITING) {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= MAX_WAITING / 2,
        "only {closed} of the oldest were closed"
    );
}

#[tokio::test]
async fn backends_page_needs_the_token_and_a_monitor() {
    let (e, _) = exporter(Some("s3cret"));
    assert_eq!(get(&e, "GET /backends HTTP/1.1").await.status, 401);
    let r = get(&e, "GET /backends HTTP/1.1\r\nAuthorization: Bearer s3cret").await;
    assert_eq!(r.status, 404, "no monitor configured");
}

/// Lists one session; records the filters it was asked to kick.
#[derive(Default)]
struct FakeAdmin(Mutex<Vec<popgate_server::SessionFilter>>);

#[async_trait]
impl Admin for FakeAdmin {
    async fn sessions(&self, filter: &popgate_server::SessionFilter) -> crate::Listing {
        let bob = crate::FleetSession {
            replica: "0000abcd".into(),
            host: "pod-1".into(),
            id: "0000abcd-000001".into(),
            tenant: "acme".into(),
            user: "bob@acme.example".into(),
            client: "192.0.2.1:4000".into(),
            since: 1,
            bytes_sent: 2,
        };
        crate::Listing {
            sessions: [bob]
                .into_iter()
                .filter(|s| filter.matches(&s.tenant, &s.user))
                .collect(),
            replicas: vec!["0000abcd".into()],
            errors: vec![],
        }
    }
    async fn kick(&self, filter: &popgate_server::SessionFilter) -> crate::Listing {
        self.0.lock().unwrap().push(filter.clone());
        self.sessions(filter).await
    }
}

#[tokio::test]
async fn admin_endpoints_always_want_the_token() {
    let admin = Arc::new(FakeAdmin::default());
    // No admin wired: not there.
    let (e, _) = exporter(Some("s3cret"));
    assert_eq!(get(&e, "GET /admin/sessions HTTP/1.1").await.status, 404);
    // No token configured: refused, and the answer says what is missing.
    let (e, _) = exporter(None);
    let e = e.admin(admin.clone());
    let r = get(&e, "GET /admin/sessions HTTP/1.1").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("metrics.bearer_token"), "{}", r.body);
    let r = get(&e, "POST /admin/kick?user=bob%40acme.example HTTP/1.1").await;
    assert_eq!(r.status, 403);
    assert!(admin.0.lock().unwrap().is_empty(), "nothing kicked");

    let (e, _) = exporter(Some("s3cret"));
    let e = e.admin(admin.clone());
    let auth = "\r\nAuthorization: Bearer s3cret";
    assert_eq!(get(&e, "GET /admin/sessions HTTP/1.1").await.status, 401);
    let r = get(
        &e,
        "GET /admin/sessions HTTP/1.1\r\nAuthorization: Bearer nope",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = get(
        &e,
        &format!("GET /admin/sessions?tenant=acme HTTP/1.1{auth}"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    let listing: crate::Listing = serde_json::from_str(&r.body).unwrap();
    assert_eq!(listing.sessions.len(), 1);
    assert_eq!(listing.sessions[0].user, "bob@acme.example");
    let r = get(
        &e,
        &format!("GET /admin/sessions?tenant=globex HTTP/1.1{auth}"),
    )
    .await;
    let listing: crate::Listing = serde_json::from_str(&r.body).unwrap();
    assert!(listing.sessions.is_empty());
    // Methods, a kick without a filter, unknown parameters and paths.
    let r = get(&e, &format!("POST /admin/sessions HTTP/1.1{auth}")).await;
    assert_eq!((r.status, r.headers.clone()), (405, vec![("Allow", "GET")]));
    let r = get(&e, &format!("GET /admin/kick?user=bob HTTP/1.1{auth}")).await;
    assert_eq!(
        (r.status, r.headers.clone()),
        (405, vec![("Allow", "POST")])
    );
    assert_eq!(
        get(&e, &format!("POST /admin/kick HTTP/1.1{auth}"))
            .await
            .status,
        400
    );
    let r = get(&e, &format!("GET /admin/sessions?who=x HTTP/1.1{auth}")).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        get(&e, &format!("GET /admin/x HTTP/1.1{auth}"))
            .await
            .status,
        404
    );
    assert!(admin.0.lock().unwrap().is_empty(), "nothing kicked yet");
    let r = get(
        &e,
        &format!("POST /admin/kick?user=bob%40acme.example HTTP/1.1{auth}"),
    )
    .await;
    assert_eq!(r.status, 200);
    let asked = admin.0.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].user.as_deref(), Some("bob@acme.example"));
    assert_eq!(asked[0].tenant, None);
}
