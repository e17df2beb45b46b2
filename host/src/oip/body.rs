//! Reads an inference request's body whole, within the server's size limit
//! (`server.max_body_bytes`), so one client cannot make the host buffer more,
//! and its pace (`server.body_timeout_ms`, `body_min_rate`).

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_ENCODING, CONTENT_LENGTH};

use super::error::OipError;
use crate::config::BodyPace;
use crate::http::body::{collect, drain, Unread};

pub async fn read(headers: &HeaderMap, body: Incoming, limit: usize, pace: BodyPace) -> Result<Bytes, OipError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        return Err(OipError::BodyTooLarge { limit });
    }
    // Compressed requests (tritonclient's request_compression_algorithm) are
    // not decoded here; say so instead of failing on garbled JSON.
    if let Some(enc) = headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).filter(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err(OipError::bad(format!("Content-Encoding '{enc}' is not supported; send the request uncompressed")));
    }
    collect(body, limit, pace, |why| match why {
        Unread::TooLarge => OipError::BodyTooLarge { limit },
        Unread::TooSlow(slow) => OipError::BodyTooSlow(slow),
        Unread::Broken(e) => OipError::bad(format!("cannot read the request body: {e}")),
    })
    .await
}
