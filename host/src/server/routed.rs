//! A routed HTTP request: the layers that read it (rate limit, parameters,
//! the wanted format, the body), then `route::answer` runs it on the shared
//! floor. Each layer can answer on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT};
use hyper::{Request, Response};

use super::render;
use crate::http::respond::{self, Body};
use crate::http::{body, ServeError};
use crate::metrics::RouteLabel;
use crate::chain::Overrides;
use crate::route::{self, Ask, CacheUse, Caching, Input, Passthrough};
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::upstream::DEADLINE_HEADER;

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
        let client = route::client(snapshot.config.server.api_key_header.as_deref(), req.headers(), peer);
        if let Err(wait) = shared.limiter.check(&route.path, &client, limit).await {
            crate::metrics::global().rate_limited.get_or_create(&RouteLabel { route: route.path.clone() }).inc();
            return (Err(ServeError::RateLimited(wait)), CacheUse::Miss);
        }
    }
    // Parameters before the body: a bad one is a 400 without reading the
    // upload. A route with an upstream passes them on for the node to check.
    let (overrides, render, pass) = match &route.upstream {
        Some(_) => (Overrides::default(), None, Passthrough { query: req.uri().query().map(str::to_string), accept: req.headers().get(ACCEPT).cloned() }),
        None => {
            let overrides = match route.chain.overrides(req.uri().query()) {
                Ok(o) => o,
                Err(message) => return (Err(ServeError::BadRequest { code: "bad_param", message }), CacheUse::Miss),
            };
            match render::wanted(&req, route.chain.renders()) {
                Ok(r) => (overrides, r, Passthrough::default()),
                Err(e) => return (Err(e), CacheUse::Miss),
            }
        }
    };
    let budget = budget(req.headers());
    let (parts, incoming) = req.into_parts();
    let pace = snapshot.config.server.body_pace;
    let input = if route.branches.is_empty() {
        body::read_upload(&parts.headers, incoming, route.max_body_bytes, pace).await.map(Input::One)
    } else {
        let fields: Vec<&str> = route.branches.iter().map(|(f, _)| f.as_str()).collect();
        body::read_parts(&parts.headers, incoming, route.max_body_bytes, pace, &fields).await.map(Input::Parts)
    };
    let input = match input {
        Ok(i) => i,
        Err(e) => return (Err(e), CacheUse::Miss),
    };
    let rendered = render.is_some();
    let cache = if fresh(&snapshot, &parts.headers) { Caching::Refresh } else { Caching::Use };
    let (answer, cache) = route::answer(shared, snapshot.clone(), index, Ask { input, overrides, render, budget, pass, cache }, started, id).await;
    let signature = snapshot.routes[index].chain.ran(rendered);
    (answer.map(|a| respond::answer(a, signature)), cache)
}

/// `Cache-Control: no-cache` with the admin token: run the chain even if the
/// cache holds the answer (an author trying a plugin). Without the token the
/// header is ignored, so no client can make the server skip its cache.
fn fresh(snapshot: &Snapshot, headers: &hyper::HeaderMap) -> bool {
    let asked = headers.get_all(hyper::header::CACHE_CONTROL).iter().any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-cache"))));
    asked && super::admin::authorize(&snapshot.config.admin.token, headers).is_ok()
}

/// The time a gateway gave this request (`x-osprey-deadline-ms`), when it did.
fn budget(headers: &hyper::HeaderMap) -> Option<Duration> {
    let ms: u64 = headers.get(DEADLINE_HEADER)?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Adds `x-osprey-cache` to a routed answer.
pub fn mark(resp: &mut Response<Body>, cache: CacheUse) {
    let v = match cache {
        CacheUse::Hit => "hit",
        CacheUse::Miss => "miss",
    };
    resp.headers_mut().insert("x-osprey-cache", HeaderValue::from_static(v));
}
