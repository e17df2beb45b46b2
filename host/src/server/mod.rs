//! The HTTP entry point: accept connections (HTTP/1.1 and h2c, or both over
//! TLS chosen by ALPN), send each request to its room or down the corridor,
//! stop gracefully. The top floor: it calls every room; none calls it.
//!
//! - `router`: method + path → host endpoint, room or route.
//! - `routed`: a routed request's HTTP layers (rate limit, parameters, body), then `route::answer`.
//! - `admin`: `/admin/status` and `/admin/reload`, behind a bearer token.
//! - `conn`: the cap on connections (all and per address), the time to a client's first bytes.
//! - `drain`: shutting down: the backlog taken in, requests read meanwhile refused 503.
//! - `dial`: a node's side of a tunnel (`[gateway]`): it dials out to a
//!   gateway and serves this server's requests over the connection it opened.
//! - `page`: the web page at `/`, compiled into the binary.
//! - `render`: whether a client asked for the annotated image.

pub mod admin;
mod conn;
mod dial;
mod drain;
pub mod page;
pub mod render;
pub mod routed;
pub mod router;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::http::respond::{self, Body};
use crate::http::{ServeError, VideoError};
use crate::metrics::{RequestLabels, RouteLabel};
use crate::plugin::PluginError;
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::video;
use router::{Miss, Target};

/// What the server's requests reach: the shared floor, and the state of the
/// rooms that live as long as this server (video jobs, live streams).
struct Rooms {
    shared: Arc<Shared>,
    videos: video::Jobs,
    streams: crate::stream::Streams,
    drain: drain::Drain,
}

/// Where a server listens and how it speaks there.
pub struct Endpoint {
    pub listener: TcpListener,
    /// HTTPS on `listener` when set; plain HTTP/1.1 and h2c otherwise.
    pub tls: Option<crate::tls::Tls>,
    /// A plain listener that redirects to HTTPS (with `tls` only).
    pub redirect: Option<TcpListener>,
}

impl Endpoint {
    pub fn plain(listener: TcpListener) -> Self {
        Endpoint { listener, tls: None, redirect: None }
    }
}

/// Serves plain HTTP on `listener`; see `serve`.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    serve(Endpoint::plain(listener), shared, shutdown).await
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// (up to `shutdown_grace`). At most `max_connections` are served at once,
/// `max_connections_per_ip` from one address; a client past either is
/// closed at once, so that a flood costs a descriptor for microseconds and
/// never queues well-behaved clients behind it. With `[gateway]`, the same
/// requests are also served over a tunnel this server dials (`dial`), which
/// it leaves cleanly on shutdown.
pub async fn serve(endpoint: Endpoint, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let settings = shared.snapshot.load().config.server.clone();
    let gateway = shared.snapshot.load().config.gateway.clone();
    let Endpoint { listener, tls, redirect } = endpoint;
    let _redirect = redirect.zip(tls.as_ref()).map(|(plain, tls)| {
        let https_port = listener.local_addr().map_or(443, |a| a.port());
        AbortOnDrop(tokio::spawn(crate::tls::redirect::serve(plain, https_port, tls.http01.clone(), settings.header_timeout)))
    });
    let acceptor = tls.map(|tls| {
        let _ = shared.tls.set(tls.status);
        Arc::new(tls.acceptor)
    });
    let rooms = Arc::new(Rooms { shared, videos: video::Jobs::default(), streams: crate::stream::Streams::default(), drain: drain::Drain::default() });
    let (leave, left) = tokio::sync::watch::channel(false);
    let dialer = gateway.map(|g| tokio::spawn(dial::run(g, rooms.clone(), left)));
    let graceful = GracefulShutdown::new();
    let builder = builder(&settings);
    let gate = conn::Gate::new(settings.max_connections, settings.max_connections_per_ip);
    let mut refusals = conn::RefusalLog::new(Duration::from_secs(10));
    let mut take = |stream: TcpStream, peer: std::net::SocketAddr| {
        let permit = match gate.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                refusals.note(why, settings.max_connections, settings.max_connections_per_ip);
                if acceptor.is_none() {
                    let _ = stream.try_write(conn::REFUSAL);
                }
                return;
            }
        };
        // An HTTP/2 answer is a HEADERS frame then DATA frames, written
        // apart: with Nagle on, the second waits for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let (rooms, builder, watcher, acceptor) = (rooms.clone(), builder.clone(), graceful.watcher(), acceptor.clone());
        let first_bytes = settings.header_timeout;
        tokio::spawn(async move {
            match acceptor {
                None => connection(conn::FirstBytes::new(stream, first_bytes), peer, &builder, watcher, rooms).await,
                // The handshake gets the time a client has to send its headers.
                Some(tls) => match tokio::time::timeout(first_bytes, tls.accept(stream)).await {
                    Ok(Ok(Some(stream))) => connection(conn::FirstBytes::new(stream, first_bytes), peer, &builder, watcher, rooms).await,
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
            drop(permit);
        });
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        take(stream, peer);
    }
    tracing::info!("shutting down: finishing in-flight requests");
    rooms.drain.start();
    // Connections the kernel completed before the signal would be reset
    // with the listener: take them in, so their requests are answered.
    match listener.into_std() {
        Ok(backlog) => {
            let _ = backlog.set_nonblocking(true);
            for _ in 0..settings.max_connections {
                let Ok((stream, peer)) = backlog.accept() else { break };
                match stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
                    Ok(stream) => take(stream, peer),
                    Err(e) => tracing::debug!(%peer, "a connection of the backlog: {e}"),
                }
            }
        }
        Err(e) => tracing::warn!("cannot take in the listen backlog: {e}"),
    }
    // The tunnel sends GOAWAY now, beside the listener's connections.
    let _ = leave.send(true);
    let started = Instant::now();
    rooms.drain.settle(settings.shutdown_grace).await;
    let finished = async {
        graceful.shutdown().await;
        if let Some(d) = dialer {
            let _ = d.await;
        }
    };
    if tokio::time::timeout(settings.shutdown_grace.saturating_sub(started.elapsed()), finished).await.is_err() {
        tracing::warn!("grace period of {} ms passed with requests still running", settings.shutdown_grace.as_millis());
    }
}

/// How hyper serves a connection: the HTTP/1 header timeout, and HTTP/2's
/// bounds on streams, including the protection against rapid reset
/// (CVE-2023-44487: a client that opens and resets streams faster than
/// they are served gets GOAWAY instead of unbounded work).
fn builder(settings: &crate::config::ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(settings.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_streams)
        // Streams reset by the client before they were served: h2's own default, stated.
        .max_pending_accept_reset_streams(20)
        // Streams this server reset for the client's protocol errors.
        .max_local_error_reset_streams(256);
    builder
}

/// One client connection, plain or after its TLS handshake.
async fn connection<IO>(io: IO, peer: std::net::SocketAddr, builder: &auto::Builder<TokioExecutor>, watcher: Watcher, rooms: Arc<Rooms>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let rooms = rooms.clone();
        async move { Ok::<_, Infallible>(handle(&rooms, req, peer).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// Stops the plain redirect listener when the HTTPS server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One request, top to bottom.
async fn handle(rooms: &Rooms, req: Request<Incoming>, peer: std::net::SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let (_busy, refused) = rooms.drain.enter();
    if refused {
        return drain::refusal(req.version());
    }
    let shared = &rooms.shared;
    let snapshot = shared.snapshot.load_full();
    let (method, path) = (req.method().as_str().to_string(), req.uri().path().to_string());
    let mut routed = None;
    let result = match router::find(&snapshot, &method, &path) {
        Ok(Target::Health) => Ok(respond::json_response(StatusCode::OK, &json!({"status": "alive"}))),
        Ok(Target::Ready) => Ok(ready(&snapshot, shared)),
        Ok(Target::Metrics) => Ok(respond::metrics(crate::metrics::global().encode())),
        Ok(Target::Admin(op)) => admin::handle(shared, &rooms.streams, op, &req).await,
        Ok(Target::Oip) => crate::oip::handle(shared, snapshot.clone(), req).await,
        Ok(Target::Page(file)) => Ok(page::serve(file)),
        Ok(Target::Stream(op)) => crate::stream::handle(shared, &rooms.streams, snapshot.clone(), op, req, peer).await,
        Ok(Target::Video(op)) => video::handle(shared, &rooms.videos, snapshot.clone(), op, req, peer).await,
        Ok(Target::Tunnel) => tunnel(shared, req, peer),
        Ok(Target::Route(index)) => {
            let id = shared.request_id();
            let (result, cache) = routed::serve(shared, snapshot.clone(), index, req, peer, started, id).await;
            routed = Some(cache);
            result
        }
        Err(Miss::NotFound) => Err(ServeError::NotFound),
        Err(Miss::MethodNotAllowed(allowed)) => Err(ServeError::MethodNotAllowed(allowed)),
    };
    let mut resp = result.unwrap_or_else(|e| {
        log_failure(&method, &path, &e);
        respond::error(&e)
    });
    if let Some(cache) = routed {
        routed::mark(&mut resp, cache);
        let route = path.clone();
        let metrics = crate::metrics::global();
        metrics.requests.get_or_create(&RequestLabels { route: route.clone(), status: resp.status().as_u16() }).inc();
        metrics.total.get_or_create(&RouteLabel { route }).observe(started.elapsed().as_secs_f64());
    }
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_secs_f64() * 1e3);
    resp
}

/// A node dialling in: admitted by its pool's token, answered 101, and the
/// connection handed to the upstream floor once hyper lets go of it.
fn tunnel(shared: &Shared, mut req: Request<Incoming>, peer: std::net::SocketAddr) -> Result<Response<Body>, ServeError> {
    use crate::upstream::tunnel;
    let admitted = tunnel::admit(&shared.upstreams, req.version(), req.headers())?;
    tunnel::open(crate::upstream::Pools::clone(&shared.upstreams), admitted, peer, hyper::upgrade::on(&mut req));
    let mut resp = Response::new(respond::full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static(tunnel::PROTOCOL));
    Ok(resp)
}

fn ready(snapshot: &Snapshot, shared: &Shared) -> Response<Body> {
    let models: Vec<_> = snapshot
        .registry
        .iter()
        .map(|m| json!({"name": m.name(), "version": m.identity().version, "provider": m.provider().to_string()}))
        .collect();
    let plugins: Vec<_> = snapshot.plugins.iter().map(|p| json!({"name": p.name, "sha256": p.sha256})).collect();
    let mut answer = json!({"status": "ready", "models": models, "plugins": plugins});
    if !snapshot.config.upstreams.is_empty() {
        answer["upstreams"] = shared.upstreams.status();
    }
    // Still ready while Redis is down: this host serves from its own cache and buckets.
    if let Some(redis) = shared.cache.shared_through() {
        answer["redis"] = json!(redis.status());
    }
    respond::json_response(StatusCode::OK, &answer)
}

/// Server-side failures get a log line with the cause; client mistakes only at debug.
fn log_failure(method: &str, path: &str, e: &ServeError) {
    match e {
        ServeError::Plugin(PluginError::Stage { .. })
        | ServeError::NotFound
        | ServeError::Unauthorized
        | ServeError::RateLimited(_)
        | ServeError::Overloaded(_)
        | ServeError::ShuttingDown
        | ServeError::WouldMissDeadline { .. }
        | ServeError::MethodNotAllowed(_)
        | ServeError::BadRequest { .. }
        | ServeError::BodyTooLarge { .. }
        | ServeError::BodyTooSlow(_)
        | ServeError::NotAcceptable(_)
        | ServeError::UnsupportedMediaType(_) => tracing::debug!(method, path, "refused: {e}"),
        ServeError::Video(v) if !matches!(v, VideoError::Unavailable(_)) => tracing::debug!(method, path, "refused: {e}"),
        _ => tracing::warn!(method, path, "failed: {e}"),
    }
}
