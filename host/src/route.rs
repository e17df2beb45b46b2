//! Runs an upload through a route, the shared floor under every entry point
//! (the server's routed requests, video frames, and later streams and
//! pools): the result cache, a turn to run, the chain (after its branches'
//! chains), the answer. Each layer can answer on its own; the chain runs only
//! when none does.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::HeaderMap;

use crate::chain::{Overrides, Render};
use crate::http::respond::{self, Answer};
use crate::http::ServeError;
use crate::metrics::{CacheLabels, CacheResult, RouteLabel};
use crate::plugin::sandbox::{Branch, Size, Start};
use crate::plugin::{Blob, Outcome, PluginError};
use crate::snapshot::{Route, Snapshot};
use crate::state::Shared;

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
    let ask = Ask { input: Input::One(upload), overrides, render: None };
    match answer(shared, snapshot.clone(), index, ask, Instant::now(), id).await.0? {
        Answer::Json(body) => Ok(body),
        Answer::Media { .. } => Err(ServeError::Internal(format!("route {} answered with an image, not JSON", snapshot.routes[index].path))),
    }
}

/// What the client sent: its image (one, or one per branch), its parameters
/// and the format it wants back.
pub struct Ask {
    pub input: Input,
    pub overrides: Overrides,
    pub render: Option<Render>,
}

pub enum Input {
    One(Blob),
    /// One per branch of the route, in the route's order.
    Parts(Vec<Blob>),
}

/// The layers after the request is read: the cache, a turn to run, the chain.
pub async fn answer(shared: &Shared, snapshot: Arc<Snapshot>, index: usize, ask: Ask, started: Instant, id: u64) -> (Result<Answer, ServeError>, CacheUse) {
    let route = &snapshot.routes[index];
    // The cache is keyed on the raw bytes, hashed before any decoding. Images
    // rendered on request are not cached: they are large and made from a
    // cached JSON answer's inputs anyway.
    let key = match (route.cache_ttl, ask.render) {
        (Some(_), None) => {
            let bodies: Vec<Bytes> = match &ask.input {
                Input::One(b) => vec![b.bytes.clone()],
                Input::Parts(parts) => parts.iter().map(|b| b.bytes.clone()).collect(),
            };
            Some(crate::cache::key(&route.version_key, &ask.overrides.canonical(), &bodies).await)
        }
        _ => None,
    };
    if let Some(k) = &key {
        let hit = shared.cache.get(k).await;
        let result = if hit.is_some() { CacheResult::hit } else { CacheResult::miss };
        crate::metrics::global().cache.get_or_create(&CacheLabels { route: route.path.clone(), result }).inc();
        if let Some(body) = hit {
            return (Ok(Answer::Json(body)), CacheUse::Hit);
        }
    }
    // Wait for a turn to run: what is held per running chain (decoded image,
    // tensors, a plugin's memory) stays bounded however many clients wait.
    let left = route.chain.deadline.saturating_sub(started.elapsed());
    let _turn = match take_turn(shared, snapshot.config.server.max_waiting, left).await {
        Ok(permit) => permit,
        Err(e) => return (Err(e), CacheUse::Miss),
    };
    let result = run_chain(snapshot.clone(), index, ask, started, id).await;
    if let (Ok(Answer::Json(body)), Some(key), Some(ttl)) = (&result, key, route.cache_ttl) {
        shared.cache.put(key, body.clone(), ttl).await;
    }
    (result, CacheUse::Miss)
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

/// Runs the chain (after the branches' chains, for a route with branches) on
/// a blocking thread, within the route's deadline.
async fn run_chain(snapshot: Arc<Snapshot>, index: usize, ask: Ask, started: Instant, id: u64) -> Result<Answer, ServeError> {
    let route: &Route = &snapshot.routes[index];
    let (deadline, path) = (route.chain.deadline, route.path.clone());
    let snap = snapshot.clone();
    // The blocking task owns its own Arc of the snapshot it started on.
    let task = tokio::task::spawn_blocking(move || {
        let route = &snap.routes[index];
        let Ask { input, overrides, render } = ask;
        let (start, branch_inference) = match input {
            Input::One(blob) => (Start { input: Some(blob), branches: Vec::new() }, Duration::ZERO),
            Input::Parts(parts) => {
                let (branches, inference) = run_branches(&snap, route, parts, started, id)?;
                (Start { input: None, branches }, inference)
            }
        };
        let mut outcome = route.chain.run(&snap.engine, snap.registry.clone(), start, &overrides, render, started, id)?;
        outcome.inference += branch_inference;
        Ok::<_, PluginError>(outcome)
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
    Ok(match outcome.output {
        Some(ref blob) => Answer::Media { content_type: blob.content_type.clone(), bytes: blob.bytes.clone() },
        None => Answer::Json(respond::outcome_json(&outcome, chain_time)),
    })
}

/// Each branch's image through its own route's chain, side by side on
/// threads of their own; what each found, in the route's order.
fn run_branches(snap: &Snapshot, route: &Route, parts: Vec<Blob>, started: Instant, id: u64) -> Result<(Vec<Branch>, Duration), PluginError> {
    let results: Vec<Result<Outcome, PluginError>> = std::thread::scope(|scope| {
        let running: Vec<_> = route
            .branches
            .iter()
            .zip(parts)
            .map(|((_, target), blob)| {
                let chain = &snap.routes[*target].chain;
                let start = Start { input: Some(blob), branches: Vec::new() };
                scope.spawn(move || chain.run(&snap.engine, snap.registry.clone(), start, &Overrides::default(), None, started, id))
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
