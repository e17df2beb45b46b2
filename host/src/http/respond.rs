//! The one place that turns results and errors into HTTP responses.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::error::{ServeError, StreamError, VideoError};
use crate::plugin::{Outcome, PluginError, StageErrorKind};
use crate::upstream::{Forwarded, UpstreamError, NODE_HEADER};

/// Every response's body: bytes known in full (`full`) or chunks streamed
/// from a channel (`channel`, for Server-Sent Events), boxed into one type.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A body of bytes known in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A body streamed from a channel, one chunk per message; it ends when every
/// sender is gone. Hyper drops it when the client goes away, which closes the
/// channel: senders learn of the disconnect from `Sender::closed`.
pub fn channel(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    ChannelBody(rx).boxed_unsync()
}

struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// A stream of Server-Sent Events (`text/event-stream`): not to be cached,
/// nor held back by a buffering proxy.
pub fn event_stream(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// `204 No Content`.
pub fn no_content() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// A chain's answer as JSON bytes (what the cache keeps): detections or
/// classes, with the source image size and timings.
pub fn outcome_json(o: &Outcome, total: Duration) -> Bytes {
    let mut answer = json!({
        "model": o.model,
        "model_version": o.model_version,
        "image": o.source.map(|(w, h)| json!({"width": w, "height": h})),
    });
    if let Some(dets) = &o.detections {
        answer["detections"] = dets
            .iter()
            .map(|d| {
                let mut det = json!({
                    "label": d.label,
                    "class_id": d.class_id,
                    "score": round(d.score, 4),
                    "box": [round(d.box_.x1, 1), round(d.box_.y1, 1), round(d.box_.x2, 1), round(d.box_.y2, 1)],
                });
                if !d.sources.is_empty() {
                    det["sources"] = json!(d.sources);
                }
                det
            })
            .collect();
    }
    if let Some(classes) = &o.classes {
        answer["top"] = classes
            .iter()
            .map(|c| json!({"label": c.label, "class_id": c.class_id, "score": round(c.score, 4)}))
            .collect();
    }
    for (name, value) in &o.report {
        answer[name] = value.clone();
    }
    let stages: serde_json::Map<String, Value> = o.stages.iter().map(|(name, t)| (name.clone(), json!(ms(*t)))).collect();
    answer["timing_ms"] = json!({
        "total": ms(total),
        "inference": ms(o.inference),
        "stages": stages,
    });
    Bytes::from(answer.to_string())
}

/// A route's answer: a chain's JSON (what the cache keeps) or encoded
/// image, or what a node of its upstream pool answered.
pub enum Answer {
    Json(Bytes),
    Media { content_type: String, bytes: Bytes },
    Forwarded(Forwarded),
}

/// A routed answer, fresh or cached: JSON, or the image a stage made.
pub fn answer(a: Answer, chain: &str) -> Response<Body> {
    let (body, content_type) = match a {
        Answer::Forwarded(f) => return forwarded(f),
        Answer::Json(body) => (body, HeaderValue::from_static("application/json")),
        Answer::Media { content_type, bytes } => {
            (bytes, HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")))
        }
    };
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    // Which plugin builds answered: lets a client see a reload take effect.
    // (A gateway's cached answer has no chain of its own.)
    if let (false, Ok(v)) = (chain.is_empty(), HeaderValue::from_str(chain)) {
        resp.headers_mut().insert("x-osprey-chain", v);
    }
    resp
}

/// A node's answer as it gave it, naming the node.
fn forwarded(f: Forwarded) -> Response<Body> {
    let mut resp = Response::new(full(f.body));
    *resp.status_mut() = f.status;
    *resp.headers_mut() = f.headers;
    if let Ok(v) = HeaderValue::from_str(&f.node) {
        resp.headers_mut().insert(NODE_HEADER, v);
    }
    resp
}

/// `Retry-After` for a predicted wait: whole seconds, rounded up, at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Status, code and message for every error a request can end in.
pub fn error(e: &ServeError) -> Response<Body> {
    let (status, _) = status_of(e);
    let mut resp = json_response(status, &json!({"error": error_object(e)}));
    let retry = match e {
        // A full queue drains in about one model run: a second is a fair first retry.
        ServeError::Plugin(PluginError::Overloaded(_)) | ServeError::Overloaded(_) | ServeError::NotInTime(_) => Some(1),
        // Another replica, or this one restarted, takes it.
        ServeError::ShuttingDown => Some(1),
        // A video job takes seconds to minutes: retrying at once only costs an upload.
        ServeError::Video(VideoError::Busy { .. }) | ServeError::Stream(StreamError::Busy { .. } | StreamError::NoPort { .. }) => Some(5),
        // Health checks run every second or so: a node may be back by then.
        ServeError::Upstream(UpstreamError::NoHealthyNode { .. } | UpstreamError::Unknown(_)) | ServeError::Plugin(PluginError::ModelUnavailable(_)) => Some(1),
        ServeError::RateLimited(wait) | ServeError::WouldMissDeadline { wait, .. } => Some(retry_after_secs(*wait)),
        _ => None,
    };
    if let Some(secs) = retry {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let ServeError::Unauthorized | ServeError::Upstream(UpstreamError::TunnelToken(_)) = e {
        resp.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let ServeError::MethodNotAllowed(allowed) = e {
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            resp.headers_mut().insert(ALLOW, v);
        }
    }
    resp
}

/// `{"code", "message"}` of an error: what a client reads under `"error"`
/// (video jobs report a frame's failure with it too).
pub fn error_object(e: &ServeError) -> Value {
    json!({"code": status_of(e).1, "message": e.to_string()})
}

fn status_of(e: &ServeError) -> (StatusCode, &'static str) {
    match e {
        ServeError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ServeError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ServeError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        ServeError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
        ServeError::WouldMissDeadline { .. } | ServeError::NotInTime(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        ServeError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ServeError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
        ServeError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ServeError::BodyTooSlow(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
        ServeError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ServeError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "not_acceptable"),
        ServeError::Deadline(_) => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        ServeError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        ServeError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        ServeError::Video(v) => match v {
            VideoError::BadVideo(_) => (StatusCode::BAD_REQUEST, "bad_video"),
            VideoError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            VideoError::TooLong { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "video_too_long"),
            VideoError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            VideoError::UnsupportedFormat(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_video_format"),
            VideoError::UnknownJob(_) => (StatusCode::NOT_FOUND, "not_found"),
            VideoError::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            VideoError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "video_unavailable"),
            VideoError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
        },
        ServeError::Stream(v) => match v {
            StreamError::Off | StreamError::Unknown(_) => (StatusCode::NOT_FOUND, "not_found"),
            StreamError::NoToken => (StatusCode::FORBIDDEN, "admin_token_required"),
            StreamError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_stream"),
            StreamError::NotAllowed(_) => (StatusCode::FORBIDDEN, "source_not_allowed"),
            StreamError::Busy { .. } | StreamError::NoPort { .. } => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            StreamError::ViewerRequired => (StatusCode::FORBIDDEN, "viewer_required"),
            StreamError::NoSegment(_) => (StatusCode::NOT_FOUND, "not_found"),
            StreamError::BadClip(_) => (StatusCode::BAD_REQUEST, "bad_video"),
            StreamError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "streams_unavailable"),
            StreamError::Ingest(_) | StreamError::Refused | StreamError::Egress(_) => (StatusCode::INTERNAL_SERVER_ERROR, "stream_failed"),
        },
        ServeError::Upstream(u) => match u {
            UpstreamError::NoHealthyNode { .. } | UpstreamError::Unknown(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_healthy_node"),
            UpstreamError::Deadline { .. } => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            UpstreamError::NodeFailed { .. } => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            UpstreamError::TunnelRequest(_) => (StatusCode::BAD_REQUEST, "bad_tunnel_request"),
            UpstreamError::TunnelPool(_) => (StatusCode::NOT_FOUND, "unknown_pool"),
            UpstreamError::TunnelToken(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        },
        ServeError::Plugin(p) => match p {
            PluginError::Stage { kind, .. } => match kind {
                StageErrorKind::BadImage => (StatusCode::BAD_REQUEST, "bad_image"),
                StageErrorKind::BadInput => (StatusCode::BAD_REQUEST, "bad_input"),
                StageErrorKind::UnsupportedType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
                StageErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
                StageErrorKind::BadSettings => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_misconfigured"),
                StageErrorKind::ModelFailed => (StatusCode::INTERNAL_SERVER_ERROR, "model_failed"),
                StageErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_failed"),
            },
            PluginError::Deadline { .. } => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            PluginError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            PluginError::ModelUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_healthy_node"),
            PluginError::RemoteFailed(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            PluginError::Trap { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_trapped"),
            PluginError::OutOfMemory { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_out_of_memory"),
            PluginError::Settings { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_misconfigured"),
            PluginError::Load { .. } | PluginError::Sandbox(_) => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_failed"),
        },
    }
}

/// A small JSON answer of the host's own endpoints.
pub fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(full(v.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `/metrics`, in the OpenMetrics text format.
pub fn metrics(text: String) -> Response<Body> {
    let mut resp = Response::new(full(text));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    resp
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0, 2)
}

fn round<T: Into<f64>>(v: T, places: i32) -> f64 {
    let p = 10f64.powi(places);
    (v.into() * p).round() / p
}
