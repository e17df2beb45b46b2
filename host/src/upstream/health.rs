//! Health checks: every `health_interval`, each node's `health_path`
//! (`/readyz`, or `/v2/health/ready` on a server of the Open Inference
//! Protocol), over its own connection, with the connect timeout as its limit. A node that fails
//! leaves the pool until a check passes again; a failed forward takes it out
//! at once (`forward`), so only checks bring nodes back. A node that dialled
//! in is asked over its tunnel, like any other; HTTP/2 pings on the same
//! connection find a tunnel whose far end vanished without a word.

use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use super::node::Node;
use super::pool::Pool;

/// Runs until the pool is dropped (a reload replaced or removed it).
pub async fn run(pool: Weak<Pool>) {
    loop {
        let Some(p) = pool.upgrade() else { return };
        let interval = p.def.health_interval;
        let mut checks = tokio::task::JoinSet::new();
        for node in p.nodes() {
            let p = p.clone();
            checks.spawn(async move {
                let verdict = check(&node, &p.def.health_path, p.def.connect_timeout).await;
                p.mark(&node, verdict.is_ok(), verdict.err().as_deref().unwrap_or(""));
            });
        }
        while checks.join_next().await.is_some() {}
        drop(p);
        tokio::time::sleep(interval).await;
    }
}

async fn check(node: &Node, path: &str, limit: Duration) -> Result<(), String> {
    let uri = node.url.join(path.trim_start_matches('/')).map_err(|e| e.to_string())?;
    let req = Request::get(uri.as_str()).body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    match tokio::time::timeout(limit, node.send(req)).await {
        Err(_) => Err(format!("{path} gave no answer within {} ms", limit.as_millis())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("{path} answered {}", resp.status())),
    }
}
