//! One upload forwarded to a node of a pool, on the same path. What the
//! node answers goes back to the client as it is (status, type, body), with
//! the node named in `x-osprey-node`. A node that never answered (refused,
//! reset, its connection gone) or answered 503 gets the request retried
//! once on another node, within the same deadline; the time left travels in
//! `x-osprey-deadline-ms`, and the node works no longer than that.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};

use super::node::{Node, SendError};
use super::pool::Pool;
use super::UpstreamError;
use crate::metrics::{NodeDirLabels, NodeStatusLabels};

/// The time a node has left for a forwarded request, in milliseconds.
pub const DEADLINE_HEADER: &str = "x-osprey-deadline-ms";
/// Which node answered, on every forwarded answer.
pub const NODE_HEADER: &str = "x-osprey-node";
/// The node's answer headers a client gets back; and, for a remote model's
/// infer, where the JSON ends and the tensor bytes begin (osprey's routes
/// never send that one).
const PASSED_BACK: [&str; 5] = ["content-type", "retry-after", "x-osprey-chain", "x-osprey-cache", "inference-header-content-length"];

/// What the gateway sends: the upload's bytes, not the client's form.
pub struct Outgoing {
    pub method: Method,
    /// The route's path and the client's query, as the client sent them.
    pub path_and_query: String,
    pub content_type: String,
    pub accept: Option<HeaderValue>,
    /// More request headers (a remote model's `Inference-Header-Content-Length`).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A node's answer.
pub struct Forwarded {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub node: String,
}

enum Attempt {
    Answered(Forwarded),
    /// No answer came back: another node may take it.
    Failed(String),
    /// The deadline passed while the node worked: no time for another.
    TimedOut,
}

pub async fn forward(pool: &Arc<Pool>, out: &Outgoing, deadline: Instant) -> Result<Forwarded, UpstreamError> {
    let name = pool.def.name.clone();
    let lease = pool.lease(None, deadline).await?;
    let first = attempt(pool, &lease.node, out, deadline).await;
    let failed_node = lease.node.clone();
    drop(lease);
    // A 503 that no other node can take is passed on as the node gave it.
    let first_failure = match first {
        Attempt::Answered(f) if f.status != StatusCode::SERVICE_UNAVAILABLE => return Ok(f),
        Attempt::TimedOut => return Err(UpstreamError::Deadline { pool: name }),
        Attempt::Answered(busy) => Ok(busy),
        Attempt::Failed(why) => Err(UpstreamError::NodeFailed { pool: name.clone(), node: failed_node.label.clone(), why }),
    };
    // Once more, on another node; if there is none, the first failure stands.
    let Ok(retry) = pool.lease(Some(&failed_node), deadline).await else {
        return first_failure;
    };
    tracing::debug!(upstream = name, from = failed_node.label, to = retry.node.label, "retrying on another node");
    match attempt(pool, &retry.node, out, deadline).await {
        Attempt::Answered(f) => Ok(f),
        Attempt::TimedOut => Err(UpstreamError::Deadline { pool: name }),
        Attempt::Failed(why) => Err(UpstreamError::NodeFailed { pool: name, node: retry.node.label.clone(), why }),
    }
}

async fn attempt(pool: &Pool, node: &Node, out: &Outgoing, deadline: Instant) -> Attempt {
    let started = Instant::now();
    let left = deadline.saturating_duration_since(started);
    if left.is_zero() {
        return Attempt::TimedOut;
    }
    let req = match request(node, out, left.as_millis() as u64) {
        Ok(r) => r,
        Err(why) => return Attempt::Failed(why),
    };
    let result = tokio::time::timeout(left, async {
        let resp = node.send(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| SendError::NoAnswer(format!("the answer broke off: {e}")))?.to_bytes();
        Ok::<_, SendError>((parts, body))
    })
    .await;
    let status = match &result {
        Ok(Ok((parts, _))) => parts.status.as_u16().to_string(),
        Ok(Err(_)) => "error".to_string(),
        Err(_) => "timeout".to_string(),
    };
    let labels = pool.labels(node);
    let metrics = crate::metrics::global();
    let bytes = |dir: &str, n: usize| {
        let l = NodeDirLabels { upstream: labels.upstream.clone(), node: labels.node.clone(), dir: dir.into() };
        metrics.upstream_bytes.get_or_create(&l).inc_by(n as u64);
    };
    bytes("sent", out.body.len());
    if let Ok(Ok((_, body))) = &result {
        bytes("received", body.len());
    }
    metrics.upstream_requests.get_or_create(&NodeStatusLabels { upstream: labels.upstream.clone(), node: labels.node.clone(), status }).inc();
    metrics.upstream_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    match result {
        Err(_) => Attempt::TimedOut,
        Ok(Err(e)) => {
            pool.mark(node, false, &e.to_string());
            Attempt::Failed(e.to_string())
        }
        Ok(Ok((parts, body))) => {
            let mut headers = HeaderMap::new();
            for name in PASSED_BACK {
                if let Some(v) = parts.headers.get(name) {
                    headers.insert(HeaderName::from_static(name), v.clone());
                }
            }
            if parts.status == StatusCode::SERVICE_UNAVAILABLE && !headers.contains_key(RETRY_AFTER) {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Attempt::Answered(Forwarded { status: parts.status, headers, body, node: node.label.clone() })
        }
    }
}

fn request(node: &Node, out: &Outgoing, left_ms: u64) -> Result<Request<Full<Bytes>>, String> {
    let uri = node.url.join(out.path_and_query.trim_start_matches('/')).map_err(|e| format!("bad path {}: {e}", out.path_and_query))?;
    let mut req = Request::builder()
        .method(out.method.clone())
        .uri(uri.as_str())
        .header(CONTENT_TYPE, &out.content_type)
        .header(DEADLINE_HEADER, left_ms.max(1))
        .body(Full::new(out.body.clone()))
        .map_err(|e| e.to_string())?;
    if let Some(a) = &out.accept {
        req.headers_mut().insert(ACCEPT, a.clone());
    }
    for (name, value) in &out.headers {
        req.headers_mut().insert(name, value.clone());
    }
    Ok(req)
}
