//! The errors of the Open Inference Protocol layer, and the one function that
//! turns them into the protocol's error answer: `{"error": "<message>"}` with
//! the status the v2 spec (and Triton's clients) expect.

use hyper::header::{HeaderValue, ALLOW};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::nn::NnError;
use crate::http::respond::{json_response, Body};

#[derive(Debug, thiserror::Error)]
pub enum OipError {
    #[error("no endpoint at {0}; see /v2, /v2/health/{{live,ready}}, /v2/models/{{model}}[/versions/{{version}}][/ready|/infer]")]
    NoEndpoint(String),
    #[error("{method} is not allowed on {path}; use {}", .allowed.join(" or "))]
    MethodNotAllowed { method: String, path: String, allowed: Vec<&'static str> },
    #[error("unknown model '{0}'; GET /readyz lists the loaded models")]
    UnknownModel(String),
    #[error("model '{name}' has no version '{version}'; it has {}", .have.join(", "))]
    UnknownVersion { name: String, version: String, have: Vec<String> },
    #[error("the request body is larger than the limit of {limit} bytes (server.max_body_bytes); send tensors with the binary extension, which is ~3x smaller than JSON numbers")]
    BodyTooLarge { limit: usize },
    #[error(transparent)]
    BodyTooSlow(crate::http::body::TooSlow),
    #[error("{0}")]
    BadRequest(String),
    /// A tensor of the request does not fit the model: name, type, shape or data.
    #[error("input '{input}': {why}")]
    BadInput { input: String, why: String },
    /// No turn to run now: too many wait, or the predicted wait would pass
    /// the deadline (`turns`); retry after `retry_after_s`.
    #[error("{why}")]
    Busy { why: String, retry_after_s: u64 },
    #[error("the server's deadline of {0} ms passed before the model answered")]
    Deadline(u128),
    #[error(transparent)]
    Model(#[from] NnError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl OipError {
    pub fn bad(message: impl Into<String>) -> Self {
        OipError::BadRequest(message.into())
    }

    pub fn input(input: &str, why: impl Into<String>) -> Self {
        OipError::BadInput { input: input.to_string(), why: why.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            OipError::NoEndpoint(_) | OipError::UnknownModel(_) | OipError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
            OipError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            OipError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            OipError::BodyTooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            OipError::BadRequest(_) | OipError::BadInput { .. } => StatusCode::BAD_REQUEST,
            // What ONNX Runtime refuses about a tensor is the client's to fix.
            OipError::Model(NnError::InvalidTensor(_)) => StatusCode::BAD_REQUEST,
            OipError::Deadline(_) | OipError::Model(NnError::Deadline { .. }) => StatusCode::GATEWAY_TIMEOUT,
            OipError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            // A full queue is overload, not failure: 503 sends a gateway's
            // retry to another node (a remote model's front retries on 503).
            OipError::Model(NnError::Unavailable { .. } | NnError::QueueFull { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            OipError::Model(NnError::RemoteFailed { .. }) => StatusCode::BAD_GATEWAY,
            OipError::Model(_) | OipError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The protocol's error answer; server-side failures are logged with their cause.
pub fn response(e: &OipError) -> Response<Body> {
    let status = e.status();
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), "oip: {e}");
    } else {
        tracing::debug!(status = status.as_u16(), "oip refused: {e}");
    }
    let mut resp = json_response(status, &json!({ "error": e.to_string() }));
    if let OipError::MethodNotAllowed { allowed, .. } = e {
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            resp.headers_mut().insert(ALLOW, v);
        }
    }
    if let OipError::Busy { retry_after_s, .. } = e {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body_of(resp: Response<Body>) -> serde_json::Value {
        let bytes = futures_util::FutureExt::now_or_never(resp.into_body().collect()).unwrap().unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn errors_are_a_json_string_under_error() {
        let resp = response(&OipError::UnknownModel("nope".into()));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = body_of(resp);
        assert!(body["error"].as_str().unwrap().contains("'nope'"), "{body}");
    }

    #[test]
    fn refused_tensors_are_the_clients_fault() {
        let e = OipError::Model(NnError::InvalidTensor("bad".into()));
        assert_eq!(response(&e).status(), StatusCode::BAD_REQUEST);
        assert_eq!(response(&OipError::Model(NnError::Runtime("x".into()))).status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response(&OipError::Model(NnError::QueueFull { model: "m".into(), size: 1 })).status(), StatusCode::SERVICE_UNAVAILABLE);
        let remote = |e| response(&OipError::Model(e)).status();
        assert_eq!(remote(NnError::Unavailable { model: "m".into(), why: "x".into() }), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(remote(NnError::RemoteFailed { model: "m".into(), why: "x".into() }), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn method_not_allowed_names_the_allowed_ones() {
        let e = OipError::MethodNotAllowed { method: "GET".into(), path: "/v2/models/m/infer".into(), allowed: vec!["POST"] };
        let resp = response(&e);
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[ALLOW], "POST");
    }
}
