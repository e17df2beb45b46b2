//! The Open Inference Protocol v2 (REST), KServe/Triton's model API, for
//! every configured model: health, metadata, and `infer` with JSON tensors
//! or the binary tensor extension.
//!
//! - `error`: the layer's errors and the one map to `{"error": "..."}` answers.
//! - `metadata`: server and model metadata, health and readiness.
//! - `infer`: the inference endpoint, from body to answer.
//! - `body`: the request body, within `server.max_body_bytes`.
//! - `decode`: a request's tensors checked against the model's ports.
//! - `wire`: the JSON objects and datatype names of the protocol.
//! - `binary`: the binary tensor extension (JSON header + raw tensor bytes).
//!
//! Models are reached as `/v2/models/{name}` (newest version) and
//! `/v2/models/{name}/versions/{version}`, the registry's `name@version`.

mod binary;
mod body;
mod decode;
mod error;
mod infer;
mod metadata;
mod wire;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::nn::{Model, Registry};
use crate::http::respond::Body;
use crate::http::ServeError;
use crate::snapshot::Snapshot;
use crate::state::Shared;
pub use error::OipError;
pub use infer::answer;

/// Answers a request under `/v2`. Every failure is answered here in the
/// protocol's own error format, so this never returns `Err`.
pub async fn handle(shared: &Shared, snapshot: Arc<Snapshot>, req: Request<Incoming>) -> Result<Response<Body>, ServeError> {
    Ok(dispatch(shared, snapshot, req).await.unwrap_or_else(|e| error::response(&e)))
}

async fn dispatch(shared: &Shared, snapshot: Arc<Snapshot>, req: Request<Incoming>) -> Result<Response<Body>, OipError> {
    let path = req.uri().path().to_string();
    let endpoint = parse(&path).ok_or_else(|| OipError::NoEndpoint(path.clone()))?;
    check_method(req.method(), &endpoint, &path)?;
    let registry = &snapshot.registry;
    match endpoint {
        Endpoint::Server => Ok(metadata::server()),
        Endpoint::Live => Ok(metadata::live()),
        Endpoint::Ready => Ok(metadata::ready()),
        Endpoint::Model(at, op) => {
            let model = resolve(registry, &at)?.clone();
            match op {
                ModelOp::Metadata => Ok(metadata::model(registry, &model)),
                ModelOp::Ready => Ok(metadata::model_ready(&model)),
                ModelOp::Infer => {
                    let name = model.name().to_string();
                    let result = infer::infer(&shared.turns, snapshot.clone(), model, req).await;
                    let status = result.as_ref().map_or_else(|e| e.status(), |r| r.status()).as_u16();
                    crate::metrics::global().oip_infer.get_or_create(&crate::metrics::ModelStatusLabels { model: name, status }).inc();
                    result
                }
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Endpoint {
    Server,
    Live,
    Ready,
    Model(ModelRef, ModelOp),
}

#[derive(Debug, PartialEq)]
enum ModelOp {
    Metadata,
    Ready,
    Infer,
}

/// A model as the path names it: a version, or the newest.
#[derive(Debug, PartialEq)]
struct ModelRef {
    name: String,
    version: Option<String>,
}

fn parse(path: &str) -> Option<Endpoint> {
    let rest = path.strip_prefix("/v2")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    Some(match segments.as_slice() {
        [] => Endpoint::Server,
        ["health", "live"] => Endpoint::Live,
        ["health", "ready"] => Endpoint::Ready,
        ["models", name, tail @ ..] => {
            let (version, op) = match tail {
                ["versions", v, op @ ..] => (Some(v.to_string()), op),
                op => (None, op),
            };
            let op = match op {
                [] => ModelOp::Metadata,
                ["ready"] => ModelOp::Ready,
                ["infer"] => ModelOp::Infer,
                _ => return None,
            };
            Endpoint::Model(ModelRef { name: name.to_string(), version }, op)
        }
        _ => return None,
    })
}

fn check_method(method: &Method, endpoint: &Endpoint, path: &str) -> Result<(), OipError> {
    let allowed: &[&'static str] = match endpoint {
        Endpoint::Model(_, ModelOp::Infer) => &["POST"],
        _ => &["GET", "HEAD"],
    };
    if allowed.contains(&method.as_str()) {
        return Ok(());
    }
    Err(OipError::MethodNotAllowed { method: method.to_string(), path: path.to_string(), allowed: allowed.to_vec() })
}

fn resolve<'r>(registry: &'r Registry, at: &ModelRef) -> Result<&'r Arc<Model>, OipError> {
    // `@` is the registry's version separator, not part of a name: the
    // version is reached through `/versions/{v}` only.
    let newest = registry.get(&at.name).filter(|_| !at.name.contains('@')).ok_or_else(|| OipError::UnknownModel(at.name.clone()))?;
    let Some(version) = &at.version else { return Ok(newest) };
    registry.get(&format!("{}@{version}", at.name)).ok_or_else(|| OipError::UnknownVersion {
        name: at.name.clone(),
        version: version.clone(),
        have: metadata::versions(registry, &at.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, version: Option<&str>, op: ModelOp) -> Option<Endpoint> {
        Some(Endpoint::Model(ModelRef { name: name.into(), version: version.map(Into::into) }, op))
    }

    #[test]
    fn paths_of_the_protocol() {
        assert_eq!(parse("/v2"), Some(Endpoint::Server));
        assert_eq!(parse("/v2/"), Some(Endpoint::Server));
        assert_eq!(parse("/v2/health/live"), Some(Endpoint::Live));
        assert_eq!(parse("/v2/health/ready"), Some(Endpoint::Ready));
        assert_eq!(parse("/v2/models/yolo"), model("yolo", None, ModelOp::Metadata));
        assert_eq!(parse("/v2/models/yolo/ready"), model("yolo", None, ModelOp::Ready));
        assert_eq!(parse("/v2/models/yolo/infer"), model("yolo", None, ModelOp::Infer));
        assert_eq!(parse("/v2/models/yolo/versions/2"), model("yolo", Some("2"), ModelOp::Metadata));
        assert_eq!(parse("/v2/models/yolo/versions/2/ready"), model("yolo", Some("2"), ModelOp::Ready));
        assert_eq!(parse("/v2/models/yolo/versions/2/infer"), model("yolo", Some("2"), ModelOp::Infer));
    }

    #[test]
    fn other_paths_are_no_endpoint() {
        for p in ["/v2x", "/v2/health", "/v2/models", "/v2/models/yolo/explain", "/v2/models/yolo/versions", "/v2/repository/index"] {
            assert_eq!(parse(p), None, "{p}");
        }
    }

    #[test]
    fn infer_is_post_only_the_rest_get() {
        let infer = parse("/v2/models/m/infer").unwrap();
        assert!(check_method(&Method::POST, &infer, "").is_ok());
        assert!(check_method(&Method::GET, &infer, "").is_err());
        assert!(check_method(&Method::HEAD, &Endpoint::Live, "").is_ok());
        assert!(check_method(&Method::POST, &Endpoint::Server, "").is_err());
    }
}
