//! A minimal HTTP/1.1 responder for `/metrics`, `/healthz`, `/readyz`,
//! `/backends`, and the admin endpoints under `/admin/` (see [`crate::admin`]).
//!
//! One request per connection (`Connection: close`), GET only (POST for
//! `/admin/kick`, whose request has no body), the request
//! head capped at [`MAX_REQUEST_HEAD`] and read under a timeout. Anything
//! else gets 400, 404, 405 or 431.
//!
//! Idle connections cannot starve the kubelet's probes: connections still
//! waiting for their request head are bounded by [`MAX_WAITING`], and when
//! a new one arrives over the bound the *oldest* waiting one is closed, so
//! a probe that sends its request at once is always read within
//! milliseconds, however many silent connections an attacker keeps open.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

use crate::admin::{self, Admin};
use crate::{BackendMonitor, CONTENT_TYPE, Metrics, Readiness};

/// The largest request head (request line and headers) accepted.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time allowed for the whole request head to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write a response to a client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the readiness checks together.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections waiting for their request head; over it, the oldest is closed.
pub const MAX_WAITING: usize = 256;
/// Responses being computed and written at once; more wait their turn.
const MAX_RESPONDING: usize = 16;

/// Serves the metrics, health and readiness endpoints.
pub struct Exporter {
    metrics: Arc<Metrics>,
    readiness: Arc<dyn Readiness>,
    backends: Option<Arc<BackendMonitor>>,
    admin: Option<Arc<dyn Admin>>,
    bearer_token: Option<String>,
}

/// Connections that have not sent their request head yet, oldest first.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    queue: VecDeque<(u64, Arc<Notify>)>,
}

impl Waiting {
    /// Registers a new connection; closes the oldest when over the bound.
    fn admit(&mut self) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let cancel = Arc::new(Notify::new());
        self.queue.push_back((id, cancel.clone()));
        if self.queue.len() > MAX_WAITING
            && let Some((_, oldest)) = self.queue.pop_front()
        {
            // A permit is stored if the task is not waiting yet.
            oldest.notify_one();
        }
        (id, cancel)
    }

    fn done(&mut self, id: u64) {
        if let Some(i) = self.queue.iter().position(|(x, _)| *x == id) {
            self.queue.remove(i);
        }
    }
}

/// A response, before it is written.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: String,
}

impl Response {
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

impl Exporter {
    pub fn new(metrics: Arc<Metrics>, readiness: Arc<dyn Readiness>) -> Self {
        Exporter {
            metrics,
            readiness,
            backends: None,
            admin: None,
            bearer_token: None,
        }
    }

    /// Serves `/admin/sessions` and `/admin/kick` from `admin`; they want
    /// the bearer token, and are refused (403) when none is set.
    pub fn admin(mut self, admin: Arc<dyn Admin>) -> Self {
        self.admin = Some(admin);
        self
    }

    /// Serves the monitor's `/backends` page (behind the bearer token, as
    /// `/metrics`: it shows the backends' error messages).
    pub fn backends(mut self, monitor: Arc<BackendMonitor>) -> Self {
        self.backends = Some(monitor);
        self
    }

    /// Requires `Authorization: Bearer TOKEN` on `/metrics` (the health
    /// endpoints stay open for probes). `None` leaves `/metrics` open.
    pub fn bearer_token(mut self, token: Option<String>) -> Self {
        self.bearer_token = token.filter(|t| !t.is_empty());
        self
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        let this = Arc::new(self);
        let responding = Arc::new(Semaphore::new(MAX_RESPONDING));
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let mut backoff = Duration::from_millis(5);
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(5);
                    stream
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let (id, cancel) = waiting.lock().unwrap_or_else(|p| p.into_inner()).admit();
            let (this, waiting, responding) = (this.clone(), waiting.clone(), responding.clone());
            tokio::spawn(async move {
                let head = tokio::select! {
                    head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)) => Some(head),
                    () = cancel.notified() => None,
                };
                waiting.lock().unwrap_or_else(|p| p.into_inner()).done(id);
                // Closed to make room for a newer connection.
                let Some(head) = head else { return };
                let Ok(_permit) = responding.acquire().await else {
                    return;
                };
                this.handle(stream, head).await;
            });
        }
    }

    async fn handle(
        &self,
        mut stream: TcpStream,
        head: Result<std::io::Result<Option<Vec<u8>>>, tokio::time::error::Elapsed>,
    ) {
        let response = match head {
            Ok(Ok(Some(head))) => self.respond(&head).await,
            Ok(Ok(None)) => Response::text(431, "request head too large\n"),
            // The client went away or sent nothing: nobody to answer.
            Ok(Err(_)) => return,
            Err(_) => Response::text(408, "request timeout\n"),
        };
        let write = async {
            stream.write_all(&response.to_bytes()).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(WRITE_TIMEOUT, write).await;
    }

    /// The response to one request head (without its final blank line).
    pub(crate) async fn respond(&self, head: &[u8]) -> Response {
        let Ok(head) = std::str::from_utf8(head) else {
            return Response::text(400, "bad request\n");
        };
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Response::text(400, "bad request\n");
        };
        if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
            return Response::text(400, "bad request\n");
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path.starts_with("/admin/") {
            return self.respond_admin(method, path, query, lines).await;
        }
        if !matches!(path, "/metrics" | "/healthz" | "/readyz" | "/backends") {
            return Response::text(404, "not found\n");
        }
        if method != "GET" {
            return Response::text(405, "method not allowed\n").header("Allow", "GET");
        }
        match path {
            "/metrics" => {
                if !self.authorized(lines) {
                    return Response::text(401, "unauthorized\n")
                        .header("WWW-Authenticate", "Bearer realm=\"popgate\"");
                }
                // popgate_ready says what /readyz would answer now.
                let ready = matches!(
                    tokio::time::timeout(READY_TIMEOUT, self.readiness.check()).await,
                    Ok(Ok(()))
                );
                self.metrics.set_ready(ready);
                Response {
                    status: 200,
                    content_type: CONTENT_TYPE,
                    headers: Vec::new(),
                    body: self.metrics.render(),
                }
            }
            "/healthz" => Response::text(200, "ok\n"),
            "/backends" => {
                if !self.authorized(lines) {
                    return Response::text(401, "unauthorized\n")
                        .header("WWW-Authenticate", "Bearer realm=\"popgate\"");
                }
                match &self.backends {
                    Some(monitor) => Response::text(200, monitor.render()),
                    None => Response::text(404, "not found\n"),
                }
            }
            _ => match tokio::time::timeout(READY_TIMEOUT, self.readiness.check()).await {
                Ok(Ok(())) => Response::text(200, "ready\n"),
                Ok(Err(check)) => Response::text(503, format!("not ready: {check}\n")),
                Err(_) => Response::text(503, "not ready: timeout\n"),
            },
        }
    }

    async fn respond_admin<'a>(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: impl Iterator<Item = &'a str>,
    ) -> Response {
        let Some(admin) = &self.admin else {
            return Response::text(404, "not found\n");
        };
        if self.bearer_token.is_none() {
            return Response::text(
                403,
                "the admin endpoints are off: they need metrics.bearer_token\n",
            );
        }
        if !self.authorized(headers) {
            return Response::text(401, "unauthorized\n")
                .header("WWW-Authenticate", "Bearer realm=\"popgate\"");
        }
        admin::respond(admin.as_ref(), method, path, query).await
    }

    /// Whether the headers carry the bearer token, when one is required.
    fn authorized<'a>(&self, headers: impl Iterator<Item = &'a str>) -> bool {
        let Some(expected) = &self.bearer_token else {
            return true;
        };
        for line in headers {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("authorization") {
                continue;
            }
            let value = value.trim();
            let Some((scheme, token)) = value.split_once(' ') else {
                return false;
            };
            return scheme.eq_ignore_ascii_case("bearer")
                && bool::from(token.trim().as_bytes().ct_eq(expected.as_bytes()));
        }
        false
    }
}

/// Reads up to the blank line ending the request head. `Ok(None)` when the
/// head is larger than [`MAX_REQUEST_HEAD`]; an error when the peer closed
/// the connection first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf[searched_from..]) {
            let end = searched_from + end;
            if end > MAX_REQUEST_HEAD {
                return Ok(None);
            }
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
}

/// Where the head ends (before `\r\n\r\n` or `\n\n`) in `buf`.
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
