//! The HTTP side: accept connections (HTTP/1.1 and h2c), send each request
//! down the corridor, stop gracefully.
//!
//! - `router`: method + path → host endpoint or route.
//! - `body`: request body → the upload.
//! - `respond`: the one map from results and errors to HTTP.
//! - `admin`: `/admin/status` and `/admin/reload`, behind a bearer token.

pub mod admin;
pub mod body;
pub mod respond;
pub mod router;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;

use crate::metrics::{RequestLabels, RouteLabel};
use crate::plugin::PluginError;
use crate::reload;
use crate::snapshot::Snapshot;
use respond::Body;
use router::{Miss, Target};

/// How long in-flight requests may take to finish once shutdown starts.
pub const GRACE: Duration = Duration::from_secs(30);

/// Errors of the serving layer; `respond::error` gives each its HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no route for this path")]
    NotFound,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("method not allowed here; allowed: {}", .0.join(", "))]
    MethodNotAllowed(Vec<String>),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("the request body is larger than this route's limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("content type '{0}' is not accepted; send image/* bytes or multipart/form-data with an 'image' field")]
    UnsupportedMediaType(String),
    #[error("the route's deadline of {} ms passed", .0.as_millis())]
    Deadline(Duration),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What every connection shares: the current snapshot (swapped whole on
/// reload), where it was loaded from, the metrics and the reload state.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// The config file reloads read; `None` for a snapshot built in code.
    pub config_path: Option<PathBuf>,
    pub reload: reload::State,
    next_request: AtomicU64,
}

impl Shared {
    pub fn new(snapshot: Snapshot, config_path: Option<PathBuf>) -> Arc<Self> {
        crate::metrics::global().generation.set(snapshot.generation as i64);
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            config_path,
            reload: reload::State::default(),
            next_request: AtomicU64::new(1),
        })
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish (up to `GRACE`).
pub async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(&shared, req).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("grace period of {}s passed with requests still running", GRACE.as_secs());
    }
}

/// One request, top to bottom.
async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let snapshot = shared.snapshot.load_full();
    let (method, path) = (req.method().as_str().to_string(), req.uri().path().to_string());
    let mut routed = false;
    let result = match router::find(&snapshot, &method, &path) {
        Ok(Target::Health) => Ok(respond::json_response(StatusCode::OK, &json!({"status": "alive"}))),
        Ok(Target::Ready) => Ok(ready(&snapshot)),
        Ok(Target::Metrics) => Ok(respond::metrics(crate::metrics::global().encode())),
        Ok(Target::Admin(op)) => admin::handle(shared, op, req.headers()).await,
        Ok(Target::Oip) => crate::oip::handle(snapshot.clone(), req).await,
        Ok(Target::Route(route)) => {
            routed = true;
            let id = shared.next_request.fetch_add(1, Ordering::Relaxed);
            run_route(snapshot.clone(), route, req, started, id).await
        }
        Err(Miss::NotFound) => Err(ServeError::NotFound),
        Err(Miss::MethodNotAllowed(allowed)) => Err(ServeError::MethodNotAllowed(allowed)),
    };
    let resp = result.unwrap_or_else(|e| {
        log_failure(&method, &path, &e);
        respond::error(&e)
    });
    if routed {
        let route = path.clone();
        let metrics = crate::metrics::global();
        metrics.requests.get_or_create(&RequestLabels { route: route.clone(), status: resp.status().as_u16() }).inc();
        metrics.total.get_or_create(&RouteLabel { route }).observe(started.elapsed().as_secs_f64());
    }
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_secs_f64() * 1e3);
    resp
}

async fn run_route(
    snapshot: Arc<Snapshot>,
    index: usize,
    req: Request<Incoming>,
    started: Instant,
    id: u64,
) -> Result<Response<Body>, ServeError> {
    let route = &snapshot.routes[index];
    let overrides = route
        .chain
        .overrides(req.uri().query())
        .map_err(|message| ServeError::BadRequest { code: "bad_param", message })?;
    let (parts, body) = req.into_parts();
    let upload = body::read_upload(&parts.headers, body, route.max_body_bytes).await?;
    let deadline = route.chain.deadline;
    // The blocking task owns its own Arc of the snapshot it started on.
    let snap = snapshot.clone();
    let task = tokio::task::spawn_blocking(move || {
        let snapshot = snap;
        let route = &snapshot.routes[index];
        route.chain.run(&snapshot.engine, snapshot.registry.clone(), upload, &overrides, started, id)
    });
    let left = deadline.saturating_sub(started.elapsed());
    // A model run cannot be interrupted; past the deadline the client gets its
    // 504 now and the blocking task's result is dropped when it ends.
    let outcome = match tokio::time::timeout(left + Duration::from_millis(20), task).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => return Err(ServeError::Internal(format!("request task failed: {join}"))),
        Err(_) => return Err(ServeError::Deadline(deadline)),
    };
    Ok(respond::outcome(&outcome, &route.chain.signature, started.elapsed()))
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
        | ServeError::MethodNotAllowed(_)
        | ServeError::BadRequest { .. }
        | ServeError::BodyTooLarge { .. }
        | ServeError::UnsupportedMediaType(_) => tracing::debug!(method, path, "refused: {e}"),
        _ => tracing::warn!(method, path, "failed: {e}"),
    }
}
