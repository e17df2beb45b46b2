//! One routed request, through the layers around its chain, in order. Each
//! layer can answer on its own; the chain runs only when none does.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};

use super::respond::{self, Body};
use super::{body, ServeError, Shared};
use crate::metrics::{CacheLabels, CacheResult, RouteLabel};
use crate::snapshot::{Route, Snapshot};

/// Whether the answer came from the cache, for `x-osprey-cache`.
#[derive(Clone, Copy)]
pub enum CacheUse {
    Hit,
    Miss,
}

pub async fn serve(
    shared: &Shared,
    snapshot: Arc<Snapshot>,
    index: usize,
    req: Request<Incoming>,
    peer: SocketAddr,
    started: Instant,
    id: u64,
) -> (Result<Response<Body>, ServeError>, CacheUse) {
    let route = &snapshot.routes[index];
    // Rate limit first: a refused client costs no body read, no hashing, no model.
    if let Some(limit) = route.rate_limit {
        let client = client(snapshot.config.server.api_key_header.as_deref(), &req, peer);
        if let Err(wait) = shared.limiter.check(&route.path, &client, limit).await {
            crate::metrics::global().rate_limited.get_or_create(&RouteLabel { route: route.path.clone() }).inc();
            return (Err(ServeError::RateLimited(wait)), CacheUse::Miss);
        }
    }
    // Parameters before the body: a bad one is a 400 without reading the upload.
    let overrides = match route.chain.overrides(req.uri().query()) {
        Ok(o) => o,
        Err(message) => return (Err(ServeError::BadRequest { code: "bad_param", message }), CacheUse::Miss),
    };
    let (parts, incoming) = req.into_parts();
    let upload = match body::read_upload(&parts.headers, incoming, route.max_body_bytes).await {
        Ok(u) => u,
        Err(e) => return (Err(e), CacheUse::Miss),
    };
    // The cache is keyed on the raw bytes, hashed before any decoding.
    let key = match route.cache_ttl {
        Some(_) => Some(crate::cache::key(&route.version_key, &overrides.canonical(), &upload.bytes).await),
        None => None,
    };
    if let Some(k) = &key {
        let hit = shared.cache.get(k).await;
        let result = if hit.is_some() { CacheResult::hit } else { CacheResult::miss };
        crate::metrics::global().cache.get_or_create(&CacheLabels { route: route.path.clone(), result }).inc();
        if let Some(body) = hit {
            return (Ok(respond::json_bytes(StatusCode::OK, body, &route.chain.signature)), CacheUse::Hit);
        }
    }
    // Wait for a turn to run: what is held per running chain (decoded image,
    // tensors, a plugin's memory) stays bounded however many clients wait.
    let left = route.chain.deadline.saturating_sub(started.elapsed());
    let _turn = match take_turn(shared, snapshot.config.server.max_waiting, left).await {
        Ok(permit) => permit,
        Err(e) => return (Err(e), CacheUse::Miss),
    };
    let result = run_chain(snapshot.clone(), index, upload, overrides, started, id).await;
    if let (Ok(body), Some(key), Some(ttl)) = (&result, key, route.cache_ttl) {
        shared.cache.put(key, body.clone(), ttl).await;
    }
    let resp = result.map(|body| respond::json_bytes(StatusCode::OK, body, &route.chain.signature));
    (resp, CacheUse::Miss)
}

/// A turn to run a chain: at once when one is free, after waiting behind
/// earlier requests otherwise; refused (429) when too many wait already.
async fn take_turn(shared: &Shared, limit: usize, left: Duration) -> Result<tokio::sync::OwnedSemaphorePermit, ServeError> {
    if let Ok(permit) = shared.inflight.clone().try_acquire_owned() {
        return Ok(permit);
    }
    let waiting = shared.waiting.fetch_add(1, Ordering::SeqCst);
    let _leave = scopeguard(|| shared.waiting.fetch_sub(1, Ordering::SeqCst));
    if waiting >= limit {
        return Err(ServeError::Overloaded(format!("{waiting} requests are waiting already; retry shortly")));
    }
    match tokio::time::timeout(left, shared.inflight.clone().acquire_owned()).await {
        Ok(permit) => Ok(permit.expect("the semaphore is never closed")),
        Err(_) => Err(ServeError::Deadline(left)),
    }
}

/// Runs `f` when dropped: the waiting count goes down however the wait ends.
fn scopeguard<F: FnMut() -> usize>(f: F) -> impl Drop {
    struct Guard<F: FnMut() -> usize>(F);
    impl<F: FnMut() -> usize> Drop for Guard<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    Guard(f)
}

/// Runs the chain on a blocking thread, within the route's deadline; returns the JSON answer.
async fn run_chain(
    snapshot: Arc<Snapshot>,
    index: usize,
    upload: crate::plugin::Blob,
    overrides: crate::chain::Overrides,
    started: Instant,
    id: u64,
) -> Result<Bytes, ServeError> {
    let route: &Route = &snapshot.routes[index];
    let (deadline, path) = (route.chain.deadline, route.path.clone());
    let snap = snapshot.clone();
    // The blocking task owns its own Arc of the snapshot it started on.
    let task = tokio::task::spawn_blocking(move || {
        let route = &snap.routes[index];
        route.chain.run(&snap.engine, snap.registry.clone(), upload, &overrides, started, id)
    });
    // A model run cannot be interrupted; past the deadline the client gets its
    // 504 now and the blocking task's result is dropped when it ends.
    let left = deadline.saturating_sub(started.elapsed());
    let outcome = match tokio::time::timeout(left + Duration::from_millis(20), task).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => return Err(ServeError::Internal(format!("request task failed: {join}"))),
        Err(_) => return Err(ServeError::Deadline(deadline)),
    };
    let chain_time = started.elapsed();
    crate::metrics::global()
        .plugin_time
        .get_or_create(&RouteLabel { route: path })
        .observe(chain_time.saturating_sub(outcome.inference).as_secs_f64());
    Ok(respond::outcome_json(&outcome, chain_time))
}

/// Who a bucket belongs to: the API key when the config names its header and
/// the client sent it, else the peer's IP.
fn client(api_key_header: Option<&str>, req: &Request<Incoming>, peer: SocketAddr) -> String {
    match api_key_header.and_then(|h| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string)) {
        Some(k) => format!("key:{k}"),
        None => format!("ip:{}", peer.ip()),
    }
}

/// Adds `x-osprey-cache` to a routed answer.
pub fn mark(resp: &mut Response<Body>, cache: CacheUse) {
    let v = match cache {
        CacheUse::Hit => "hit",
        CacheUse::Miss => "miss",
    };
    resp.headers_mut().insert("x-osprey-cache", HeaderValue::from_static(v));
}
