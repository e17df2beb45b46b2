//! A node's side of a tunnel (`[gateway]`): for a node without a public
//! address. It opens one connection to the gateway (TLS for https, with ALPN
//! http/1.1 since an upgrade needs HTTP/1.1), asks `GET /v1/tunnel` with
//! `Upgrade: osprey-tunnel`, its pool, its name and the pool's token, and
//! on 101 serves HTTP/2 over the connection it opened, with this server's
//! own `handle`: the gateway is the client. HTTP/2 pings both ways find a
//! dead peer. When the connection ends it dials again after a capped
//! exponential backoff with full jitter; on shutdown it sends GOAWAY,
//! finishes the requests in flight and closes (a clean leave).
//!
//! The gateway's end is `upstream::tunnel`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Rooms;
use crate::config::GatewayDef;
use crate::upstream::tunnel::{NAME_HEADER, PATH, POOL_HEADER, PROTOCOL};

/// The first retry waits up to this; each failure doubles the ceiling...
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// ...up to this, so a node comes back within half a minute of its gateway.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A tunnel that lasted this long was healthy: the next retry starts low again.
const HEALTHY: Duration = Duration::from_secs(10);
/// Connecting, TLS and the upgrade together.
const OPEN_LIMIT: Duration = Duration::from_secs(10);
/// Pings find a gateway that vanished without a word (a pulled cable, a
/// NAT that forgot the mapping) within ~7 s, and keep NAT mappings warm.
/// The same as the gateway's end (`upstream::node::h2_client`).
const PING_INTERVAL: Duration = Duration::from_secs(4);
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the gateway refused the tunnel: {status} {message}")]
    Refused { status: StatusCode, message: String },
    #[error("the upgrade failed: {0}")]
    Upgrade(String),
    #[error("no tunnel within {} s", OPEN_LIMIT.as_secs())]
    Timeout,
}

/// Keeps a tunnel to the gateway open until `stop` turns true.
pub(super) async fn run(gateway: GatewayDef, rooms: Arc<Rooms>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    let mut attempt: u32 = 0;
    let to = gateway.connect.as_str().trim_end_matches('/').to_string();
    loop {
        attempt += 1;
        let opened = tokio::select! {
            o = tokio::time::timeout(OPEN_LIMIT, open(&gateway)) => o.unwrap_or(Err(DialError::Timeout)),
            () = stopped(&mut stop) => return,
        };
        let why = match opened {
            Ok((io, peer)) => {
                tracing::info!(gateway = to, pool = gateway.pool, node = gateway.name, attempt, "tunnel open: serving the gateway over this node's connection");
                attempt = 0;
                let since = Instant::now();
                match serve(io, peer, &rooms, &mut stop).await {
                    Ended::Left => {
                        tracing::info!(gateway = to, "left the gateway: GOAWAY sent, requests in flight finished, tunnel closed");
                        return;
                    }
                    Ended::Lost(why) if since.elapsed() >= HEALTHY => {
                        backoff.reset();
                        format!("tunnel closed: {why}")
                    }
                    Ended::Lost(why) => format!("tunnel closed after {} ms: {why}", since.elapsed().as_millis()),
                }
            }
            Err(e) => format!("attempt {attempt} failed: {e}"),
        };
        let wait = backoff.next();
        tracing::warn!(gateway = to, pool = gateway.pool, "{why}; dialling again in {} ms", wait.as_millis());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone: the server ended).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum Ended {
    /// Shutdown: GOAWAY sent and every request in flight answered.
    Left,
    /// The connection ended on its own; why.
    Lost(String),
}

/// Serves the gateway's requests over the tunnel until it ends or `stop`.
async fn serve(io: Upgraded, peer: SocketAddr, rooms: &Arc<Rooms>, stop: &mut watch::Receiver<bool>) -> Ended {
    let rooms = rooms.clone();
    // The gateway is the client of every request here: its address stands
    // for the client's, as for requests it forwards to a listed node.
    let service = service_fn(move |req| {
        let rooms = rooms.clone();
        async move { Ok::<_, Infallible>(super::handle(&rooms, req, peer).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).keep_alive_interval(PING_INTERVAL).keep_alive_timeout(PING_TIMEOUT);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => Ended::Lost(ended.map_or_else(|e| e.to_string(), |()| "the gateway closed it".into())),
        () = stopped(stop) => {
            // GOAWAY: the gateway sends nothing new here and retries
            // elsewhere what this node refuses; what it started finishes.
            // `server::serve` bounds the wait by the shutdown grace.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            Ended::Left
        }
    }
}

/// Connects (TLS for https) and upgrades; the gateway's address with it.
async fn open(gateway: &GatewayDef) -> Result<(Upgraded, SocketAddr), DialError> {
    let url = &gateway.connect;
    let host = url.host_str().ok_or_else(|| DialError::Connect("no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await.map_err(|e| DialError::Connect(e.to_string()))?;
    tcp.set_nodelay(true).map_err(|e| DialError::Connect(e.to_string()))?;
    let peer = tcp.peer_addr().map_err(|e| DialError::Connect(e.to_string()))?;
    let io = if url.scheme() == "https" {
        let mut config = (*crate::tls::client_config(gateway.ca_root.as_deref()).map_err(|e| DialError::Tls(e.to_string()))?).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| DialError::Tls(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| DialError::Tls(e.to_string()))?;
        upgrade(TokioIo::new(tls), gateway).await?
    } else {
        upgrade(TokioIo::new(tcp), gateway).await?
    };
    Ok((io, peer))
}

/// `GET /v1/tunnel` with `Upgrade: osprey-tunnel`; the connection itself on 101.
async fn upgrade<IO>(io: IO, gateway: &GatewayDef) -> Result<Upgraded, DialError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |e: &dyn std::fmt::Display| DialError::Upgrade(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await.map_err(|e| fail(&e))?;
    // Driven until it hands the connection over (or fails, which the request sees).
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let url = &gateway.connect;
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let header = |v: &str| HeaderValue::from_str(v).map_err(|e| fail(&e));
    let req = Request::get(PATH)
        .header(HOST, header(authority)?)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, PROTOCOL)
        .header(AUTHORIZATION, header(&format!("Bearer {}", gateway.token.expose()))?)
        .header(POOL_HEADER, header(&gateway.pool)?)
        .header(NAME_HEADER, header(&gateway.name)?)
        .body(Empty::new())
        .map_err(|e| fail(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return hyper::upgrade::on(resp).await.map_err(|e| fail(&e));
    }
    // The gateway's error answer says what to fix (pool, token); a page
    // from something else in front of it is cut short.
    let status = resp.status();
    let body = Limited::new(resp.into_body(), 4096).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    Err(DialError::Refused { status, message })
}

/// Capped exponential backoff with full jitter: the n-th wait is drawn
/// uniformly from zero to `base * 2^n` (at most `cap`), so nodes that lost
/// the same gateway do not all dial back in the same instant. (`backon`,
/// already a dependency of `redis`, adds its jitter on top of the delay
/// instead: never below it.)
struct Backoff {
    base: Duration,
    cap: Duration,
    step: u32,
}

impl Backoff {
    fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap, step: 0 }
    }

    /// The ceiling of the next wait.
    fn ceiling(&self) -> Duration {
        self.base.saturating_mul(1u32 << self.step.min(20)).min(self.cap)
    }

    fn next(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.step = self.step.saturating_add(1);
        ceiling.mul_f64(unit_random())
    }

    fn reset(&mut self) {
        self.step = 0;
    }
}

/// Uniform in [0, 1); the middle if the system has no randomness to give.
fn unit_random() -> f64 {
    getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_drawn_at_random_below_it_and_restart_low() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let ceilings: Vec<u128> = (0..10)
            .map(|_| {
                let ceiling = b.ceiling();
                assert!(b.next() <= ceiling);
                ceiling.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        for _ in 0..100 {
            b.next();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30), "no overflow after many failures");
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(250));
        let waits: Vec<Duration> = (0..20).map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next()).collect();
        assert!(waits.iter().any(|w| *w != waits[0]), "jittered: {waits:?}");
    }
}
