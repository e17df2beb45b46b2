//! The HTTP side: accept connections (HTTP/1.1 and h2c, or both over TLS
//! chosen by ALPN), send each request down the corridor, stop gracefully.
//!
//! - `router`: method + path → host endpoint or route.
//! - `body`: request body → the upload.
//! - `route`: the layers around a route's chain (rate limit, body, cache, deadline).
//! - `respond`: the one map from results and errors to HTTP.
//! - `admin`: `/admin/status` and `/admin/reload`, behind a bearer token.
//! - `page`: the web page at `/`, compiled into the binary.
//! - `render`: whether a client asked for the annotated image.

pub mod admin;
pub mod body;
pub mod page;
pub mod render;
pub mod respond;
pub mod route;
pub mod router;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::cache::{connect_redis, Cache, CacheError};
use crate::metrics::{RequestLabels, RouteLabel};
use crate::ratelimit::{Limiter, SystemClock};
use crate::plugin::PluginError;
use crate::reload;
use crate::snapshot::Snapshot;
use respond::Body;
use router::{Miss, Target};

/// Errors of the serving layer; `respond::error` gives each its HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no route for this path")]
    NotFound,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("rate limit reached; retry in {:.1} s", .0.as_secs_f64())]
    RateLimited(Duration),
    #[error("overloaded: {0}")]
    Overloaded(String),
    #[error("method not allowed here; allowed: {}", .0.join(", "))]
    MethodNotAllowed(Vec<String>),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("the request body is larger than this route's limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("content type '{0}' is not accepted; send image/* bytes or multipart/form-data with an 'image' field")]
    UnsupportedMediaType(String),
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    #[error("the route's deadline of {} ms passed", .0.as_millis())]
    Deadline(Duration),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Video(#[from] crate::video::VideoError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What every connection shares: the current snapshot (swapped whole on
/// reload), where it was loaded from, the reload state, and the services that
/// outlive snapshots (result cache, token buckets).
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// The config file reloads read; `None` for a snapshot built in code.
    pub config_path: Option<PathBuf>,
    pub reload: reload::State,
    pub cache: Cache,
    pub limiter: Limiter,
    /// Turns to run a chain (`[server] max_inflight`), first come first served.
    pub inflight: Arc<Semaphore>,
    /// Requests waiting for a turn (bounded by `[server] max_waiting`).
    pub waiting: std::sync::atomic::AtomicUsize,
    /// The certificate being served; unset while TLS is off.
    pub tls: OnceLock<Arc<crate::tls::Status>>,
    /// Video jobs, running and recently ended.
    pub videos: crate::video::Jobs,
    next_request: AtomicU64,
}

impl Shared {
    /// Connects the services the config names (Redis when `[redis] url` is set).
    pub async fn new(snapshot: Snapshot, config_path: Option<PathBuf>) -> Result<Arc<Self>, CacheError> {
        let (cache, limiter) = match &snapshot.config.redis {
            Some(url) => {
                let conn = connect_redis(url).await?;
                (Cache::redis(conn.clone(), url), Limiter::redis(conn, url))
            }
            None => (Cache::memory(snapshot.config.cache_bytes), Limiter::memory(Box::<SystemClock>::default())),
        };
        Ok(Self::with(snapshot, config_path, cache, limiter))
    }

    /// With services made by the caller (tests bring a fake clock).
    pub fn with(snapshot: Snapshot, config_path: Option<PathBuf>, cache: Cache, limiter: Limiter) -> Arc<Self> {
        reload::announce(&snapshot);
        let inflight = Arc::new(Semaphore::new(snapshot.config.server.max_inflight));
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            config_path,
            reload: reload::State::default(),
            inflight,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            cache,
            limiter,
            tls: OnceLock::new(),
            videos: crate::video::Jobs::default(),
            next_request: AtomicU64::new(1),
        })
    }

    /// A new request id, for the logs (video frames take one each).
    pub fn request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }
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
/// (up to `shutdown_grace`). At most `max_connections` are served at once;
/// further clients wait in the listen backlog.
pub async fn serve(endpoint: Endpoint, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let settings = shared.snapshot.load().config.server.clone();
    let Endpoint { listener, tls, redirect } = endpoint;
    let _redirect = redirect.zip(tls.as_ref()).map(|(plain, tls)| {
        let https_port = listener.local_addr().map_or(443, |a| a.port());
        AbortOnDrop(tokio::spawn(crate::tls::redirect::serve(plain, https_port, tls.http01.clone(), settings.header_timeout)))
    });
    let acceptor = tls.map(|tls| {
        let _ = shared.tls.set(tls.status);
        Arc::new(tls.acceptor)
    });
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(settings.header_timeout);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
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
        let (shared, builder, watcher, acceptor) = (shared.clone(), builder.clone(), graceful.watcher(), acceptor.clone());
        tokio::spawn(async move {
            match acceptor {
                None => connection(stream, peer, &builder, watcher, shared).await,
                // The handshake gets the time a client has to send its headers.
                Some(tls) => match tokio::time::timeout(settings.header_timeout, tls.accept(stream)).await {
                    Ok(Ok(Some(stream))) => connection(stream, peer, &builder, watcher, shared).await,
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
            drop(permit);
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("grace period of {} ms passed with requests still running", settings.shutdown_grace.as_millis());
    }
}

/// One client connection, plain or after its TLS handshake.
async fn connection<IO>(io: IO, peer: std::net::SocketAddr, builder: &auto::Builder<TokioExecutor>, watcher: Watcher, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req, peer).await) }
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
async fn handle(shared: &Arc<Shared>, req: Request<Incoming>, peer: std::net::SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let snapshot = shared.snapshot.load_full();
    let (method, path) = (req.method().as_str().to_string(), req.uri().path().to_string());
    let mut routed = None;
    let result = match router::find(&snapshot, &method, &path) {
        Ok(Target::Health) => Ok(respond::json_response(StatusCode::OK, &json!({"status": "alive"}))),
        Ok(Target::Ready) => Ok(ready(&snapshot)),
        Ok(Target::Metrics) => Ok(respond::metrics(crate::metrics::global().encode())),
        Ok(Target::Admin(op)) => admin::handle(shared, op, req.headers()).await,
        Ok(Target::Oip) => crate::oip::handle(snapshot.clone(), req).await,
        Ok(Target::Page(file)) => Ok(page::serve(file)),
        Ok(Target::Video(op)) => crate::video::handle(shared, snapshot.clone(), op, req, peer).await,
        Ok(Target::Route(index)) => {
            let id = shared.request_id();
            let (result, cache) = route::serve(shared, snapshot.clone(), index, req, peer, started, id).await;
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
        route::mark(&mut resp, cache);
        let route = path.clone();
        let metrics = crate::metrics::global();
        metrics.requests.get_or_create(&RequestLabels { route: route.clone(), status: resp.status().as_u16() }).inc();
        metrics.total.get_or_create(&RouteLabel { route }).observe(started.elapsed().as_secs_f64());
    }
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_secs_f64() * 1e3);
    resp
}

fn ready(snapshot: &Snapshot) -> Response<Body> {
    let models: Vec<_> = snapshot
        .registry
        .iter()
        .map(|m| json!({"name": m.name(), "version": m.identity().version, "provider": m.provider().to_string()}))
        .collect();
    let plugins: Vec<_> = snapshot.plugins.iter().map(|p| json!({"name": p.name, "sha256": p.sha256})).collect();
    respond::json_response(StatusCode::OK, &json!({"status": "ready", "models": models, "plugins": plugins}))
}

/// Server-side failures get a log line with the cause; client mistakes only at debug.
fn log_failure(method: &str, path: &str, e: &ServeError) {
    match e {
        ServeError::Plugin(PluginError::Stage { .. })
        | ServeError::NotFound
        | ServeError::Unauthorized
        | ServeError::RateLimited(_)
        | ServeError::Overloaded(_)
        | ServeError::MethodNotAllowed(_)
        | ServeError::BadRequest { .. }
        | ServeError::BodyTooLarge { .. }
        | ServeError::NotAcceptable(_)
        | ServeError::UnsupportedMediaType(_) => tracing::debug!(method, path, "refused: {e}"),
        ServeError::Video(v) if !matches!(v, crate::video::VideoError::Unavailable(_)) => tracing::debug!(method, path, "refused: {e}"),
        _ => tracing::warn!(method, path, "failed: {e}"),
    }
}
