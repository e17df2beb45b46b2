//! The admin API behind a bearer token: `GET /admin/status` (what is loaded,
//! the last reload, the TLS certificate) and `POST /admin/reload`. Off (404) when no token is set.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderMap, AUTHORIZATION};
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
}

pub async fn handle(shared: &Arc<Shared>, op: Op, headers: &HeaderMap) -> Result<Response<Body>, ServeError> {
    authorize(&shared.snapshot.load().config.admin.token, headers)?;
    match op {
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
    let Some(token) = token else { return Err(ServeError::NotFound) };
    let given = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    if crate::config::same_secret(given, token) {
        Ok(())
    } else {
        Err(ServeError::Unauthorized)
    }
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
