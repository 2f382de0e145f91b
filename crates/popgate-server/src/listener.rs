//! Listeners and the server's life: accept, spawn sessions, drain on shutdown.
//!
//! Shutdown follows mini-redis: the accept loops stop; sessions go on for the
//! grace period; then a watch tells the remaining ones to say
//! `-ERR [SYS/TEMP]` and close; the server waits for every session task to
//! end (each holds a clone of an mpsc sender, so `recv` returns `None` when
//! the last one is gone).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use pop3_proto::{Code, response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::conn::Io;
use crate::proxy::{self, Prefixed, ProxyHeader};
use crate::session::{Session, StartingTls};
use crate::{ListenerConfig, Shared, TlsMode};

/// A bound socket and how to treat its connections.
pub struct Listener {
    pub tcp: TcpListener,
    pub config: ListenerConfig,
}

/// What new connections get: replaced when the configuration is reloaded,
/// while each session keeps the [`Shared`] it started with.
#[derive(Clone)]
pub struct SharedHandle(Arc<watch::Sender<Arc<Shared>>>);

impl SharedHandle {
    /// The configuration a connection accepted now gets.
    pub fn current(&self) -> Arc<Shared> {
        self.0.borrow().clone()
    }

    /// Serves new connections with `shared` from now on.
    pub fn replace(&self, shared: Shared) {
        self.0.send_replace(Arc::new(shared));
    }
}

pub struct Server {
    shared: SharedHandle,
}

impl Server {
    pub fn new(shared: Shared) -> Self {
        Server {
            shared: SharedHandle(Arc::new(watch::Sender::new(Arc::new(shared)))),
        }
    }

    /// The configuration new connections get now.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.current()
    }

    /// A handle to replace the configuration while the server runs.
    pub fn handle(&self) -> SharedHandle {
        self.shared.clone()
    }

    /// Serves until `shutdown` resolves, then drains: sessions get `grace`
    /// to finish on their own before they are told to close.
    pub async fn run(
        self,
        listeners: Vec<Listener>,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) {
        let (force_tx, force_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accept_tasks = Vec::new();
        for l in listeners {
            let shared = self.shared.clone();
            let force = force_rx.clone();
            let done = done_tx.clone();
            let stop = stop_rx.clone();
            accept_tasks.push(tokio::spawn(accept_loop(shared, l, force, done, stop)));
        }
        drop(done_tx);
        shutdown.await;
        tracing::info!(
            "shutting down: no new connections; sessions have {:?} to finish",
            grace
        );
        let _ = stop_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            tracing::info!("grace period over: closing the remaining sessions");
            let _ = force_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), done_rx.recv()).await;
        }
        tracing::info!("all sessions closed");
    }
}

async fn accept_loop(
    handle: SharedHandle,
    listener: Listener,
    force: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let config = Arc::new(listener.config);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.tcp.accept() => a,
            _ = stop.wait_for(|&s| s) => return,
        };
        let (socket, peer): (_, SocketAddr) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let shared = handle.current();
        shared.observer.connection_accepted();
        let (config, force, done) = (config.clone(), force.clone(), done.clone());
        tokio::spawn(async move {
            connection(shared, config, socket, peer, force).await;
            drop(done);
        });
    }
}

/// Everything between accept and the greeting: the PROXY header, the
/// connection caps, the implicit TLS handshake. Then the session.
async fn connection(
    shared: Arc<Shared>,
    config: Arc<ListenerConfig>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    force: watch::Receiver<bool>,
) {
    let timeout = shared.config.command_timeout;
    let mut client = peer;
    // Bytes the client sent right after the PROXY header come first.
    let mut after_header = Vec::new();
    // The balancer terminated the client's TLS (trusted proxies only).
    let mut tls_via_proxy = false;
    if config.proxy_protocol {
        if !config.trusted_proxies.iter().any(|c| c.contains(peer.ip())) {
            tracing::warn!(peer = %peer, "PROXY header expected from an untrusted address; closing");
            shared.observer.connection_rejected("untrusted_proxy");
            shared.observer.proxy_header_error("untrusted");
            return;
        }
        // Boxed, as the TLS handshake and the caps below: these futures
        // live a moment, and the session's (which an idle session keeps
        // for hours) should not be as large as theirs.
        match Box::pin(proxy::read_header(&mut tcp, timeout)).await {
            Ok((header, rest)) => {
                match header {
                    ProxyHeader::Proxied(addr) => client = addr,
                    ProxyHeader::ProxiedTls(addr) => {
                        client = addr;
                        tls_via_proxy = true;
                    }
                    ProxyHeader::Local => {}
                }
                after_header = rest;
            }
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "bad PROXY header; closing");
                shared.observer.connection_rejected("proxy_header");
                shared.observer.proxy_header_error(e.reason());
                return;
            }
        }
    }
    let mut socket = Prefixed::new(after_header, tcp);
    let permit = match Box::pin(shared.limits.connect(client.ip())).await {
        Ok(p) => p,
        Err(rejected) => {
            shared.observer.connection_rejected(rejected.reason());
            if config.tls != TlsMode::Implicit {
                let mut out = Vec::new();
                response::err(
                    &mut out,
                    Some(Code::SysTemp),
                    "Too many connections, try again later.",
                );
                let _ = tokio::time::timeout(timeout, socket.write_all(&out)).await;
            }
            return;
        }
    };
    let (io, tls_active): (Box<dyn Io>, bool) = if config.tls == TlsMode::Implicit {
        let Some(tls) = &shared.tls else {
            return;
        };
        match Box::pin(tokio::time::timeout(timeout, tls.acceptor().accept(socket))).await {
            Ok(Ok(stream)) => {
                shared.observer.tls_handshake("implicit");
                (Box::new(stream), true)
            }
            Ok(Err(e)) => {
                let reason = crate::tls::failure_reason(&e);
                shared.observer.tls_handshake_failed("implicit", reason);
                // Before the session: no span yet, so the client is named here.
                // A connection closed before or during the handshake (a TCP
                // probe, a load balancer's health check, a port scan) is no
                // news: at debug, as the metric still counts it.
                if reason == "eof" {
                    tracing::debug!(client = %client, mode = "implicit", reason, error = %e, "TLS handshake failed");
                } else {
                    tracing::info!(client = %client, mode = "implicit", reason, error = %e, "TLS handshake failed");
                }
                return;
            }
            Err(_) => {
                shared.observer.tls_handshake_failed("implicit", "timeout");
                tracing::info!(
                    client = %client,
                    mode = "implicit",
                    reason = "timeout",
                    "TLS handshake failed"
                );
                return;
            }
        }
    } else {
        (Box::new(socket), false)
    };
    let tls = if tls_via_proxy {
        // Counted with popgate's own handshakes, under its own kind.
        shared.observer.tls_handshake("proxy");
        StartingTls::Proxy
    } else if tls_active {
        StartingTls::Local
    } else {
        StartingTls::None
    };
    Session::new(shared, config, io, client, tls, force, permit)
        .run()
        .await;
}
