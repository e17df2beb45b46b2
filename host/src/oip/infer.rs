//! `POST /v2/models/{model}[/versions/{version}]/infer`: read the body, then
//! on a blocking thread parse it, run the model and encode the answer.
//!
//! Parsing and encoding go off the async runtime too: a YOLO request in JSON
//! is ~10 MB of numbers in and ~25 MB out, tens of milliseconds of CPU that
//! would otherwise stall every connection on the worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::binary::{self, Tail, HEADER_LENGTH};
use super::decode::{self, Decoded, Wanted};
use super::error::OipError;
use super::wire::{self, InferRequest, InferResponse, OutputSize, ResponseOutput};
use crate::nn::{Model, Tensor};
use crate::http::respond::Body;
use crate::snapshot::Snapshot;
use crate::turns::{Refused, Turns};

/// The run takes a turn like a route's chain does, in a line of its own per
/// model (`/v2/models/NAME/infer`): OIP calls share the cores and the models
/// with the routes, and a 10-minute soak of every route with 6 OIP
/// connections beside them, when OIP held no turn, saw the routes on the
/// same model wait behind OIP's runs and were refused 99 % of the time.
pub async fn infer(turns: &Arc<Turns>, snapshot: Arc<Snapshot>, model: Arc<Model>, req: Request<Incoming>) -> Result<Response<Body>, OipError> {
    let settings = &snapshot.config.server;
    let (parts, body) = req.into_parts();
    let header_length = match parts.headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| OipError::bad("Inference-Header-Content-Length is not text"))?.to_string()),
    };
    // A gateway whose model is remote to this server says how long it waits.
    let budget = parts.headers.get(crate::upstream::DEADLINE_HEADER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).map(Duration::from_millis);
    let deadline = budget.map_or(settings.deadline, |b| b.min(settings.deadline));
    let until = Instant::now() + deadline;
    let body = super::body::read(&parts.headers, body, settings.max_body_bytes, settings.body_pace).await?;
    let line = format!("/v2/models/{}/infer", model.name());
    let turn = turns.take(&line, until.saturating_duration_since(Instant::now()), settings.max_waiting).await.map_err(|refused| match refused {
        Refused::Full { .. } => OipError::Busy { why: refused.to_string(), retry_after_s: 1 },
        Refused::WouldMiss { wait, .. } => OipError::Busy { why: refused.to_string(), retry_after_s: crate::http::respond::retry_after_secs(wait) },
        Refused::NotInTime { .. } => OipError::Busy { why: refused.to_string(), retry_after_s: 1 },
    })?;
    // The turn goes with the run: it is held as long as the cores are.
    let task = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        answer(&model, body, header_length.as_deref(), until)
    });
    // A model run cannot be interrupted: past the deadline the client gets its
    // 504 now, and the blocking task's result is dropped when it ends.
    match tokio::time::timeout_at(until.into(), task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(OipError::Internal(format!("inference task failed: {join}"))),
        Err(_) => Err(OipError::Deadline(deadline.as_millis())),
    }
}

/// Blocking: the whole request, from body bytes to the response (the OIP
/// fuzz target starts here, with the body already read).
pub fn answer(model: &Model, body: Bytes, header_length: Option<&str>, until: Instant) -> Result<Response<Body>, OipError> {
    let (json, tail) = binary::split(body, header_length)?;
    let req: InferRequest = serde_json::from_slice(&json)
        .map_err(|e| OipError::bad(format!("the body is not a v2 inference request: {e}")))?;
    let id = req.id.clone();
    let Decoded { inputs, outputs } = decode::decode(model, req, Tail::new(tail))?;
    let results = model.run_until(inputs, Some(until))?;
    encode(model, id.as_deref(), &outputs, &results)
}

/// The response: JSON header with every wanted output, binary ones' bytes after it.
fn encode(model: &Model, id: Option<&str>, wanted: &[Wanted], results: &[(String, Tensor)]) -> Result<Response<Body>, OipError> {
    let mut outputs = Vec::with_capacity(wanted.len());
    let mut binaries = Vec::new();
    for w in wanted {
        let (_, t) = results
            .iter()
            .find(|(n, _)| n == &w.name)
            .ok_or_else(|| OipError::Internal(format!("model '{}' did not return output '{}'", model.name(), w.name)))?;
        let size = w.binary.then(|| OutputSize { binary_data_size: binary::raw(&t.data).len() });
        outputs.push(ResponseOutput {
            name: &w.name,
            datatype: wire::datatype(t.ty()),
            shape: t.dims.clone(),
            parameters: size,
            data: (!w.binary).then(|| (&t.data).into()),
        });
        if w.binary {
            binaries.push(&t.data);
        }
    }
    let identity = model.identity();
    let header = InferResponse { model_name: &identity.name, model_version: &identity.version, id, outputs };
    let json = serde_json::to_vec(&header).map_err(|e| OipError::Internal(format!("encoding the response: {e}")))?;
    let (body, header_length) = binary::encode(json, &binaries);
    Ok(response(body, header_length))
}

fn response(body: Bytes, header_length: Option<usize>) -> Response<Body> {
    let mut resp = Response::new(crate::http::respond::full(body));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    match header_length {
        Some(n) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    resp
}
