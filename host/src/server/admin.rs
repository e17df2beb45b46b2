//! The admin API behind a bearer token: `GET /admin/status` (what is loaded,
//! the last reload, the TLS certificate), `POST /admin/reload` and
//! `GET /admin/audit` (the streams' viewers). Off (404) when no token is set.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::http::respond::{json_response, Body};
use crate::http::ServeError;
use crate::reload::{self, Outcome};
use crate::snapshot::Snapshot;
use crate::state::Shared;

pub enum Op {
    Status,
    Reload,
    Audit,
}

pub async fn handle<B>(shared: &Arc<Shared>, streams: &crate::stream::Streams, op: Op, req: &hyper::Request<B>) -> Result<Response<Body>, ServeError> {
    authorize(&shared.snapshot.load().config.admin.token, req.headers())?;
    match op {
        Op::Audit => audit(shared, streams, req.uri().query()).await,
        Op::Status => Ok(json_response(StatusCode::OK, &status(shared))),
        Op::Reload => {
            let shared = shared.clone();
            let record = tokio::task::spawn_blocking(move || reload::reload(&shared, "POST /admin/reload"))
                .await
                .map_err(|e| ServeError::Internal(format!("reload task failed: {e}")))?;
            // 422: the new files were read but could not be loaded; the old ones still serve.
            let status = match record.outcome {
                Outcome::Success { .. } => StatusCode::OK,
                Outcome::RolledBack { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            };
            Ok(json_response(status, &json!(record)))
        }
    }
}

pub(super) fn authorize(token: &Option<String>, headers: &HeaderMap) -> Result<(), ServeError> {
    crate::http::auth::bearer(token, headers)
}

/// `GET /admin/audit?viewer=&from=&to=&limit=`: rows of the viewers' audit
/// log, oldest first; `from` and `to` are Unix seconds (inclusive).
async fn audit(shared: &Shared, streams: &crate::stream::Streams, query: Option<&str>) -> Result<Response<Body>, ServeError> {
    let settings = shared.snapshot.load().config.streams.clone().ok_or(crate::http::StreamError::Off)?;
    let log = streams.audit(&settings).await?;
    let mut q = crate::audit::Query { limit: 1000, ..Default::default() };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let bad = || ServeError::BadRequest { code: "bad_param", message: format!("{k}={v}: a whole number") };
        match &*k {
            "viewer" => q.viewer = Some(v.parse().map_err(|_| bad())?),
            "from" => q.from = Some(v.parse().map_err(|_| bad())?),
            "to" => q.to = Some(v.parse().map_err(|_| bad())?),
            "limit" => q.limit = v.parse::<usize>().map_err(|_| bad())?.min(100_000),
            _ => return Err(ServeError::BadRequest { code: "bad_param", message: format!("unknown parameter '{k}' (viewer, from, to, limit)") }),
        }
    }
    let committed = log.committed();
    let rows = tokio::task::spawn_blocking(move || log.query(&q)).await.map_err(|e| ServeError::Internal(e.to_string()))?.map_err(|e| ServeError::Internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &json!({"rows": rows, "committed_since_start": committed})))
}

fn status(shared: &Shared) -> Value {
    let snap: Arc<Snapshot> = shared.snapshot.load_full();
    let plugins: Vec<Value> = snap
        .plugins
        .iter()
        .map(|p| json!({"name": p.name, "file": p.path, "sha256": p.sha256, "loaded_at": unix(p.loaded_at)}))
        .collect();
    let models: Vec<Value> = snap
        .registry
        .iter()
        .map(|m| {
            let id = m.identity();
            let newest = snap.registry.get(&id.name).is_some_and(|n| Arc::ptr_eq(n, m));
            json!({
                "name": id.name, "version": id.version, "newest": newest, "file": id.file, "sha256": id.sha256,
                "provider": m.provider().to_string(), "loaded_at": unix(m.loaded_at()),
            })
        })
        .collect();
    let routes: Vec<Value> = snap
        .routes
        .iter()
        .map(|r| json!({"method": r.method, "path": r.path, "chain": r.chain.signature, "deadline_ms": r.chain.deadline.as_millis() as u64}))
        .collect();
    json!({
        "generation": snap.generation,
        "built_at": unix(snap.built_at),
        "plugins": plugins,
        "models": models,
        "routes": routes,
        "last_reload": shared.reload.last(),
        "tls": shared.tls.get().map_or_else(|| json!({"mode": "off", "domains": [], "not_after": null}), |t| t.to_json()),
    })
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| (d.as_secs_f64() * 1e3).round() / 1e3)
}
