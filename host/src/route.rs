//! Runs an upload through a route, the shared floor under every entry point
//! (the server's routed requests, video frames, and later streams and
//! pools): the result cache, a turn to run, the chain (after its branches'
//! chains), the answer. Each layer can answer on its own; the chain runs only
//! when none does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, StatusCode};

use crate::chain::{Overrides, Render};
use crate::http::respond::{self, Answer};
use crate::http::ServeError;
use crate::metrics::{CacheLabels, CacheResult, RouteLabel};
use crate::plugin::sandbox::{Branch, Size, Start};
use crate::plugin::{Blob, Outcome, PluginError};
use crate::snapshot::{Route, Snapshot};
use crate::state::Shared;
use crate::turns::Refused;
use crate::upstream::Outgoing;

/// Whether the answer came from the cache, for `x-osprey-cache`.
#[derive(Clone, Copy)]
pub enum CacheUse {
    Hit,
    Miss,
}

/// Runs one image through route `index` the way a client's POST goes once its
/// body is read (cache, a turn to run, the chain), with parameters already
/// checked by the route's `chain.overrides`; the JSON answer. Video jobs send
/// every frame through here, so the route's cache, queues and limits apply to
/// them too.
pub async fn run_upload(
    shared: &Shared,
    snapshot: Arc<Snapshot>,
    index: usize,
    upload: Blob,
    overrides: Overrides,
    id: u64,
) -> Result<Bytes, ServeError> {
    let route = &snapshot.routes[index];
    if !route.branches.is_empty() {
        let message = format!("route {} takes one image per branch; it cannot run on single images", route.path);
        return Err(ServeError::BadRequest { code: "bad_route", message });
    }
    let ask = Ask { input: Input::One(upload), overrides, render: None, budget: None, pass: Passthrough::default(), cache: Caching::Use };
    match answer(shared, snapshot.clone(), index, ask, Instant::now(), id).await.0? {
        Answer::Json(body) => Ok(body),
        Answer::Forwarded(f) if f.status == StatusCode::OK => Ok(f.body),
        Answer::Forwarded(f) if matches!(f.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => {
            Err(ServeError::Overloaded(format!("node {} answered {}", f.node, f.status)))
        }
        Answer::Forwarded(f) => Err(ServeError::Internal(format!("node {} answered {}: {}", f.node, f.status, String::from_utf8_lossy(&f.body)))),
        Answer::Media { .. } => Err(ServeError::Internal(format!("route {} answered with an image, not JSON", snapshot.routes[index].path))),
    }
}

/// What the client sent: its image (one, or one per branch), its parameters
/// and the format it wants back.
pub struct Ask {
    pub input: Input,
    pub overrides: Overrides,
    pub render: Option<Render>,
    /// Less time than the route's deadline, when the request brings it (a
    /// gateway's `x-osprey-deadline-ms`): the node never works past it.
    pub budget: Option<Duration>,
    /// For a route with an upstream: what goes to the node as the client sent it.
    pub pass: Passthrough,
    pub cache: Caching,
}

/// How a request uses the result cache.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Answer from it when it holds the answer; keep a new one.
    Use,
    /// Answer from the chain even when it holds the answer, and keep the new
    /// one: an author's request with the admin token (`Cache-Control: no-cache`).
    Refresh,
    /// Neither look nor keep: a live stream's frames, which never come twice
    /// (sensor noise) and, 25 a second, would push clients' answers out of it.
    Bypass,
}

/// The client's query and `Accept`, forwarded to a node unread: the node's
/// own route checks them.
#[derive(Default)]
pub struct Passthrough {
    pub query: Option<String>,
    pub accept: Option<HeaderValue>,
}

impl Passthrough {
    /// Whether the client may get an image back, which is never cached.
    fn wants_image(&self) -> bool {
        let accept = self.accept.as_ref().and_then(|a| a.to_str().ok()).unwrap_or("");
        accept.contains("image/") || self.query.as_deref().is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "render"))
    }

    /// The query in a stable order, for cache keys.
    fn canonical(&self) -> String {
        let mut pairs: Vec<String> = url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes()).map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        pairs.join("&")
    }
}

pub enum Input {
    One(Blob),
    /// One per branch of the route, in the route's order.
    Parts(Vec<Blob>),
}

/// The layers after the request is read: the cache, then a turn to run and
/// the chain, or the route's upstream pool.
pub async fn answer(shared: &Shared, snapshot: Arc<Snapshot>, index: usize, ask: Ask, started: Instant, id: u64) -> (Result<Answer, ServeError>, CacheUse) {
    let route = &snapshot.routes[index];
    let deadline = ask.budget.map_or(route.chain.deadline, |b| b.min(route.chain.deadline));
    let key = match ask.cache {
        Caching::Bypass => None,
        Caching::Use | Caching::Refresh => cache_key(route, &ask).await,
    };
    if let Some(k) = key.as_ref().filter(|_| ask.cache == Caching::Use) {
        let hit = shared.cache.get(k).await;
        let result = if hit.is_some() { CacheResult::hit } else { CacheResult::miss };
        crate::metrics::global().cache.get_or_create(&CacheLabels { route: route.path.clone(), result }).inc();
        if let Some(body) = hit {
            return (Ok(Answer::Json(body)), CacheUse::Hit);
        }
    }
    let result = match &route.upstream {
        // The nodes bound their own work; the gateway holds no turn while it waits.
        Some(pool) => forward(shared, route, pool, ask, started + deadline).await,
        None => {
            // Wait for a turn to run: what is held per running chain (decoded
            // image, tensors, a plugin's memory) stays bounded however many clients wait.
            let left = deadline.saturating_sub(started.elapsed());
            match take_turn(shared, &snapshot.config.server, &route.path, left).await {
                Ok(_turn) => run_chain(snapshot.clone(), index, ask, started, deadline, id).await,
                Err(e) => Err(e),
            }
        }
    };
    if let (Some(body), Some(key), Some(ttl)) = (result.as_ref().ok().and_then(cacheable), key, route.cache_ttl) {
        shared.cache.put(key, body, ttl).await;
    }
    (result, CacheUse::Miss)
}

/// The key of the answer in the cache, keyed on the raw bytes, hashed before
/// any decoding; `None` when the route does not cache or the client may get
/// an image back (large, and made from a cached JSON answer's inputs anyway).
async fn cache_key(route: &Route, ask: &Ask) -> Option<String> {
    route.cache_ttl?;
    let params = match route.upstream {
        Some(_) if ask.pass.wants_image() => return None,
        Some(_) => ask.pass.canonical(),
        None if ask.render.is_some() => return None,
        None => ask.overrides.canonical(),
    };
    let bodies: Vec<Bytes> = match &ask.input {
        Input::One(b) => vec![b.bytes.clone()],
        Input::Parts(parts) => parts.iter().map(|b| b.bytes.clone()).collect(),
    };
    Some(crate::cache::key(&route.version_key, &params, &bodies).await)
}

/// What of an answer the cache keeps: JSON that succeeded.
fn cacheable(a: &Answer) -> Option<Bytes> {
    match a {
        Answer::Json(body) => Some(body.clone()),
        Answer::Forwarded(f) if f.status == StatusCode::OK && f.headers.get(CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/json")) => Some(f.body.clone()),
        _ => None,
    }
}

/// The upload to a node of the route's pool, on the same path.
async fn forward(shared: &Shared, route: &Route, pool: &str, ask: Ask, deadline: Instant) -> Result<Answer, ServeError> {
    let pool = shared.upstreams.get(pool)?;
    let Input::One(blob) = ask.input else {
        return Err(ServeError::Internal(format!("route {} forwards one image; it has no branches", route.path)));
    };
    let path_and_query = match &ask.pass.query {
        Some(q) => format!("{}?{q}", route.path),
        None => route.path.clone(),
    };
    let method = route.method.parse().unwrap_or(hyper::Method::POST);
    let out = Outgoing { method, path_and_query, content_type: blob.content_type, accept: ask.pass.accept, headers: Default::default(), body: blob.bytes };
    Ok(Answer::Forwarded(crate::upstream::forward(&pool, &out, deadline).await?))
}

/// A turn to run a chain (`turns`): at once when one is free, after waiting
/// in the route's line otherwise. Refused at once (429) when too many wait
/// already, or (503) when the predicted wait and run would pass the deadline
/// left: waiting for a 504 only holds a connection and a queue place. A
/// request whose turn comes too late to finish (or never) is refused then
/// (503), unstarted: 504 is left for a run that started in time and overran.
async fn take_turn(shared: &Shared, server: &crate::config::ServerSettings, route: &str, left: Duration) -> Result<crate::turns::Turn, ServeError> {
    shared.turns.take(route, left, server.max_waiting).await.map_err(|refused| match refused {
        Refused::Full { .. } => ServeError::Overloaded(refused.to_string()),
        Refused::WouldMiss { wait, answer, bound } => {
            crate::metrics::global().refused_by_deadline.get_or_create(&RouteLabel { route: route.to_string() }).inc();
            ServeError::WouldMissDeadline { wait, answer, bound }
        }
        Refused::NotInTime { .. } => {
            crate::metrics::global().refused_late.get_or_create(&RouteLabel { route: route.to_string() }).inc();
            ServeError::NotInTime(refused.to_string())
        }
    })
}

/// Runs the chain (after the branches' chains, for a route with branches) on
/// a blocking thread, within the route's deadline.
async fn run_chain(snapshot: Arc<Snapshot>, index: usize, ask: Ask, started: Instant, deadline: Duration, id: u64) -> Result<Answer, ServeError> {
    let route: &Route = &snapshot.routes[index];
    let path = route.path.clone();
    let snap = snapshot.clone();
    // The blocking task owns its own Arc of the snapshot it started on.
    let task = tokio::task::spawn_blocking(move || {
        let route = &snap.routes[index];
        let Ask { input, overrides, render, .. } = ask;
        let (start, branch_inference) = match input {
            Input::One(blob) => (Start { input: Some(blob), branches: Vec::new() }, Duration::ZERO),
            Input::Parts(parts) => {
                let (branches, inference) = run_branches(&snap, route, parts, started + deadline, id)?;
                (Start { input: None, branches }, inference)
            }
        };
        let mut outcome = route.chain.run(&snap.engine, snap.registry.clone(), start, &overrides, render, started + deadline, id)?;
        outcome.inference += branch_inference;
        Ok::<_, PluginError>(outcome)
    });
    // A model run cannot be interrupted; past the deadline the client gets its
    // 504 now and the blocking task's result is dropped when it ends.
    let left = deadline.saturating_sub(started.elapsed());
    let outcome = match tokio::time::timeout(left + Duration::from_millis(20), task).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => {
            // A panic is a bug of this server: its message is for the log, not the client.
            tracing::error!(route = %path, request = id, "request task failed: {join}");
            return Err(ServeError::Internal(format!("request {id} failed (a bug of this server; its cause is logged)")));
        }
        Err(_) => return Err(ServeError::Deadline(deadline)),
    };
    let chain_time = started.elapsed();
    crate::metrics::global()
        .plugin_time
        .get_or_create(&RouteLabel { route: path })
        .observe(chain_time.saturating_sub(outcome.inference).as_secs_f64());
    Ok(match outcome.output {
        Some(ref blob) => Answer::Media { content_type: blob.content_type.clone(), bytes: blob.bytes.clone() },
        None => Answer::Json(respond::outcome_json(&outcome, chain_time)),
    })
}

/// Each branch's image through its own route's chain, side by side on
/// threads of their own; what each found, in the route's order. A branch
/// runs within its own route's deadline counted from now, as a request of
/// that route would, and within the whole route's: counted from when the
/// whole request came, a fusion (15 s) that had waited 10 s for its turn
/// gave its branches (`/v1/detect`, 10 s) nothing, and 329 fusions admitted
/// in time ended in 504 in a 30-minute soak.
fn run_branches(snap: &Snapshot, route: &Route, parts: Vec<Blob>, until: Instant, id: u64) -> Result<(Vec<Branch>, Duration), PluginError> {
    let now = Instant::now();
    let results: Vec<Result<Outcome, PluginError>> = std::thread::scope(|scope| {
        let running: Vec<_> = route
            .branches
            .iter()
            .zip(parts)
            .map(|((_, target), blob)| {
                let chain = &snap.routes[*target].chain;
                let start = Start { input: Some(blob), branches: Vec::new() };
                let until = (now + chain.deadline).min(until);
                scope.spawn(move || chain.run(&snap.engine, snap.registry.clone(), start, &Overrides::default(), None, until, id))
            })
            .collect();
        running.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(PluginError::Sandbox("a branch's thread panicked".into())))).collect()
    });
    let mut branches = Vec::new();
    let mut inference = Duration::ZERO;
    for ((name, _), result) in route.branches.iter().zip(results) {
        let outcome = result?;
        inference += outcome.inference;
        branches.push(Branch {
            name: name.clone(),
            source: outcome.source.map(|(width, height)| Size { width, height }),
            model: outcome.model,
            detections: outcome.detections.unwrap_or_default(),
        });
    }
    Ok((branches, inference))
}

/// Who a bucket belongs to: the API key when the config names its header and
/// the client sent it, else the peer's IP.
pub fn client(api_key_header: Option<&str>, headers: &HeaderMap, peer: SocketAddr) -> String {
    match api_key_header.and_then(|h| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string)) {
        Some(k) => format!("key:{k}"),
        None => format!("ip:{}", peer.ip()),
    }
}
