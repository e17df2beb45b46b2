//! One node of a pool: an osprey reached at a base URL, or one that dialled
//! in (`tunnel`). One HTTP/2 connection carries all its requests (h2c for
//! `http://`, h2 over TLS for `https://`, or the node's own tunnel); a
//! listed node's is made on first use and remade when it closes, a tunnel's
//! is the one the node opened and ends with it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// How a request to a node failed before any answer came back: safe to try
/// on another node.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer: {0}")]
    NoAnswer(String),
}

pub struct Node {
    pub url: url::Url,
    /// The URL as answers and metrics name the node (no trailing slash).
    pub label: String,
    healthy: AtomicBool,
    inflight: AtomicUsize,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    reach: Reach,
}

/// How the gateway reaches a node.
enum Reach {
    /// It dials the node's URL, again whenever the connection has closed.
    Dial { connect_timeout: Duration },
    /// The node dialled in: its connection is the only one. `close` asks
    /// the task that holds it (`tunnel::serve`) to end it.
    Tunnel { close: tokio::sync::Notify },
}

impl Node {
    pub fn new(url: url::Url, connect_timeout: Duration) -> Self {
        let label = url.as_str().trim_end_matches('/').to_string();
        // Healthy until shown otherwise: a gateway that starts before its
        // first health check can already serve.
        Node { url, label, healthy: AtomicBool::new(true), inflight: AtomicUsize::new(0), conn: tokio::sync::Mutex::new(None), reach: Reach::Dial { connect_timeout } }
    }

    /// A node that dialled in, on the HTTP/2 connection made over its tunnel;
    /// `url` gives requests an authority (the node ignores it).
    pub fn tunnel(url: url::Url, label: String, sender: SendRequest<Full<Bytes>>) -> Self {
        let conn = tokio::sync::Mutex::new(Some(sender));
        Node { url, label, healthy: AtomicBool::new(true), inflight: AtomicUsize::new(0), conn, reach: Reach::Tunnel { close: tokio::sync::Notify::new() } }
    }

    pub fn is_tunnel(&self) -> bool {
        matches!(self.reach, Reach::Tunnel { .. })
    }

    /// Asks a tunnel's task to end the connection (the pool stopped taking
    /// it); the node will dial again. Nothing for a listed node.
    pub fn close(&self) {
        if let Reach::Tunnel { close } = &self.reach {
            // A stored permit: the task sees it even if it is not waiting yet.
            close.notify_one();
        }
    }

    /// Resolves when `close` was called (never, for a listed node).
    pub async fn closed(&self) {
        match &self.reach {
            Reach::Tunnel { close } => close.notified().await,
            Reach::Dial { .. } => std::future::pending().await,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records health; returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::AcqRel) != healthy
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Takes a slot if fewer than `cap` are in flight.
    pub(super) fn try_take(&self, cap: usize) -> bool {
        self.inflight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1)).is_ok()
    }

    pub(super) fn give_back(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Sends one request on the node's connection (making it first if need be).
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, SendError> {
        let mut sender = self.sender().await?;
        sender.ready().await.map_err(|e| SendError::NoAnswer(e.to_string()))?;
        sender.send_request(req).await.map_err(|e| SendError::NoAnswer(e.to_string()))
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let mut conn = self.conn.lock().await;
        if let Some(s) = conn.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let connect_timeout = match self.reach {
            Reach::Dial { connect_timeout } => connect_timeout,
            // Only the node can open its tunnel again; it leaves the pool meanwhile.
            Reach::Tunnel { .. } => return Err(SendError::NoAnswer("its tunnel closed".into())),
        };
        let fresh = tokio::time::timeout(connect_timeout, self.connect())
            .await
            .map_err(|_| SendError::Connect(format!("no connection within {} ms", connect_timeout.as_millis())))??;
        *conn = Some(fresh.clone());
        Ok(fresh)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let fail = |e: &dyn std::fmt::Display| SendError::Connect(e.to_string());
        let host = self.url.host_str().ok_or_else(|| SendError::Connect("no host".into()))?.to_string();
        let port = self.url.port_or_known_default().unwrap_or(80);
        let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await.map_err(|e| fail(&e))?;
        tcp.set_nodelay(true).map_err(|e| fail(&e))?;
        if self.url.scheme() == "https" {
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| fail(&e))?;
            let tls = tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp).await.map_err(|e| fail(&e))?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }
}

/// The gateway's side of every HTTP/2 connection to a node, dialled or tunnelled.
pub(super) fn h2_client() -> hyper::client::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // Pings find a dead peer (a pulled cable sends no reset) within ~7 s:
        // inside the default 10 s deadline, so a request caught on a cut link
        // is retried on another node in time (tests/netns: a tunnel's link cut
        // under load fails no request). A ping is 17 bytes each way per 4 s.
        .keep_alive_interval(Duration::from_secs(4))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    builder
}

async fn handshake<IO>(io: IO) -> Result<SendRequest<Full<Bytes>>, SendError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = h2_client().handshake(io).await.map_err(|e| SendError::Connect(format!("HTTP/2 handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

/// The Web PKI roots (`tls::client_config`), and ALPN h2: nodes over https
/// are public servers that speak HTTP/2.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut config = (*crate::tls::client_config(None).expect("the Web PKI roots and ring's protocol versions make a config")).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(config)
        })
        .clone()
}
