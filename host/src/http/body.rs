//! Request body → the upload a chain starts from: raw `image/*` bytes or the
//! `image` field of a `multipart/form-data` form (or one field per branch),
//! within the route's size limit.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};

use super::ServeError;
use crate::plugin::Blob;

/// The multipart field that carries the image.
const FIELD: &str = "image";

pub async fn read_upload(headers: &HeaderMap, body: Incoming, limit: usize) -> Result<Blob, ServeError> {
    let mut parts = read(headers, body, limit, &[FIELD]).await?;
    Ok(parts.remove(0))
}

/// The named fields of a `multipart/form-data` upload, in the order asked
/// (routes with branches: one image per branch).
pub async fn read_parts(headers: &HeaderMap, body: Incoming, limit: usize, fields: &[&str]) -> Result<Vec<Blob>, ServeError> {
    read(headers, body, limit, fields).await
}

async fn read(headers: &HeaderMap, body: Incoming, limit: usize, fields: &[&str]) -> Result<Vec<Blob>, ServeError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        return Err(ServeError::BodyTooLarge { limit });
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let is_multipart = mime == "multipart/form-data";
    if !is_multipart && fields != [FIELD] {
        let message = format!("this route takes multipart/form-data with the fields {}", fields.join(", "));
        return Err(ServeError::BadRequest { code: "bad_form", message });
    }
    if !(is_multipart || mime.starts_with("image/") || mime == "application/octet-stream" || mime.is_empty()) {
        return Err(ServeError::UnsupportedMediaType(content_type));
    }
    let bytes = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            ServeError::BodyTooLarge { limit }
        } else {
            ServeError::BadRequest { code: "bad_body", message: format!("cannot read the request body: {e}") }
        }
    })?;
    let bytes = bytes.to_bytes();
    let parts = if is_multipart { from_form(&content_type, bytes, fields).await? } else { vec![Blob { content_type: mime, bytes }] };
    for (blob, field) in parts.iter().zip(fields) {
        if blob.bytes.is_empty() {
            let message = if fields.len() == 1 { "the request carries no image".to_string() } else { format!("field '{field}' is empty") };
            return Err(ServeError::BadRequest { code: "empty_body", message });
        }
    }
    Ok(parts)
}

/// Reads and drops what a refused client is still sending (bounded in bytes
/// and time), so it reads our answer instead of a reset connection.
pub async fn drain(mut body: Incoming) {
    let mut left: usize = 64 << 20;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(frame)) = body.frame().await {
            left = left.saturating_sub(frame.data_ref().map_or(0, |d| d.len()));
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

async fn from_form(content_type: &str, bytes: Bytes, fields: &[&str]) -> Result<Vec<Blob>, ServeError> {
    let bad = |message: String| ServeError::BadRequest { code: "bad_form", message };
    let boundary = multer::parse_boundary(content_type).map_err(|e| bad(format!("multipart/form-data: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(bytes) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut found: Vec<Option<Blob>> = fields.iter().map(|_| None).collect();
    while let Some(field) = form.next_field().await.map_err(|e| bad(format!("multipart/form-data: {e}")))? {
        let Some(at) = fields.iter().position(|f| field.name() == Some(*f)) else { continue };
        let name = fields[at];
        let content_type = field.content_type().map(|m| m.essence_str().to_string()).unwrap_or_default();
        if !(content_type.is_empty() || content_type.starts_with("image/") || content_type == "application/octet-stream") {
            return Err(ServeError::UnsupportedMediaType(content_type));
        }
        let bytes = field.bytes().await.map_err(|e| bad(format!("field '{name}': {e}")))?;
        found[at] = Some(Blob { content_type, bytes });
    }
    let missing: Vec<&str> = fields.iter().zip(&found).filter(|(_, b)| b.is_none()).map(|(f, _)| *f).collect();
    if !missing.is_empty() {
        let names = missing.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ");
        return Err(bad(format!("the form has no field named {names}")));
    }
    Ok(found.into_iter().flatten().collect())
}
