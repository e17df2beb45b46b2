//! Request body → the upload a chain starts from: raw `image/*` bytes or the
//! `image` field of a `multipart/form-data` form (or one field per branch),
//! within the route's size limit and the server's pace (`Paced`: a body
//! that trickles in is cut off, so a slow client cannot hold its
//! connection and task for ever).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use tokio::time::Sleep;

use super::ServeError;
use crate::config::BodyPace;
use crate::plugin::Blob;

/// The multipart field that carries the image.
const FIELD: &str = "image";

/// Parts a form may have: a route takes one field per branch, so a form of
/// thousands is no upload but a way to spend the server's time.
const MAX_PARTS: usize = 64;

pub async fn read_upload(headers: &HeaderMap, body: Incoming, limit: usize, pace: BodyPace) -> Result<Blob, ServeError> {
    let mut parts = read(headers, body, limit, pace, &[FIELD]).await?;
    Ok(parts.remove(0))
}

/// The named fields of a `multipart/form-data` upload, in the order asked
/// (routes with branches: one image per branch).
pub async fn read_parts(headers: &HeaderMap, body: Incoming, limit: usize, pace: BodyPace, fields: &[&str]) -> Result<Vec<Blob>, ServeError> {
    read(headers, body, limit, pace, fields).await
}

/// A body sent more slowly than `BodyPace` allows.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly: {received} bytes in {:.1} s; this server waits {} s, plus a second for every {} bytes received ([server] body_timeout_ms, body_min_rate)", .elapsed.as_secs_f64(), .pace.timeout.as_secs_f64(), .pace.min_rate)]
pub struct TooSlow {
    pub received: u64,
    pub elapsed: Duration,
    pub pace: BodyPace,
}

/// A request body that fails with `TooSlow` once its deadline passes: the
/// start, plus `pace.timeout`, plus a second per `pace.min_rate` bytes.
pub struct Paced<B> {
    body: B,
    pace: BodyPace,
    started: Instant,
    received: u64,
    deadline: Pin<Box<Sleep>>,
}

impl<B> Paced<B> {
    pub fn new(body: B, pace: BodyPace) -> Self {
        let started = Instant::now();
        Paced { body, pace, started, received: 0, deadline: Box::pin(tokio::time::sleep(pace.timeout)) }
    }

    fn allowed(&self) -> Duration {
        self.pace.timeout + Duration::from_secs_f64(self.received as f64 / f64::from(self.pace.min_rate.max(1)))
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                let at = tokio::time::Instant::from_std(this.started + this.allowed());
                this.deadline.as_mut().reset(at);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            // Waiting for the client: the timer wakes this poll when it fires.
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let too_slow = TooSlow { received: this.received, elapsed: this.started.elapsed(), pace: this.pace };
                    Poll::Ready(Some(Err(Box::new(too_slow))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Reads a whole body within `limit` bytes and `pace`; `on_error` names the
/// errors the caller's layer answers with.
pub async fn collect<E>(body: Incoming, limit: usize, pace: BodyPace, on_error: impl FnOnce(Unread) -> E) -> Result<Bytes, E> {
    match Limited::new(Paced::new(body, pace), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(on_error(if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            Unread::TooLarge
        } else {
            match e.downcast::<TooSlow>() {
                Ok(slow) => Unread::TooSlow(*slow),
                Err(e) => Unread::Broken(e.to_string()),
            }
        })),
    }
}

/// Why a body could not be read whole.
pub enum Unread {
    TooLarge,
    TooSlow(TooSlow),
    /// The connection failed or the client reset the stream.
    Broken(String),
}

async fn read(headers: &HeaderMap, body: Incoming, limit: usize, pace: BodyPace, fields: &[&str]) -> Result<Vec<Blob>, ServeError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        return Err(ServeError::BodyTooLarge { limit });
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    // Refused by its headers before a byte of it is read.
    let form = form_of(content_type, fields)?;
    let bytes = collect(body, limit, pace, |why| match why {
        Unread::TooLarge => ServeError::BodyTooLarge { limit },
        Unread::TooSlow(slow) => ServeError::BodyTooSlow(slow),
        Unread::Broken(e) => ServeError::BadRequest { code: "bad_body", message: format!("cannot read the request body: {e}") },
    })
    .await?;
    parts_of(content_type, form, bytes, fields).await
}

/// The upload in a body already read whole: what [`read_parts`] makes of
/// it after the size and pace checks (the fuzz targets start here).
pub async fn parse_upload(content_type: &str, bytes: Bytes, fields: &[&str]) -> Result<Vec<Blob>, ServeError> {
    let form = form_of(content_type, fields)?;
    parts_of(content_type, form, bytes, fields).await
}

/// How a body carries its upload, by its `Content-Type`.
enum Form {
    /// The body is the image; its media type, lower-cased.
    Raw(String),
    Multipart,
}

fn form_of(content_type: &str, fields: &[&str]) -> Result<Form, ServeError> {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let is_multipart = mime == "multipart/form-data";
    if !is_multipart && fields != [FIELD] {
        let message = format!("this route takes multipart/form-data with the fields {}", fields.join(", "));
        return Err(ServeError::BadRequest { code: "bad_form", message });
    }
    if !(is_multipart || mime.starts_with("image/") || mime == "application/octet-stream" || mime.is_empty()) {
        return Err(ServeError::UnsupportedMediaType(content_type.to_string()));
    }
    Ok(if is_multipart { Form::Multipart } else { Form::Raw(mime) })
}

async fn parts_of(content_type: &str, form: Form, bytes: Bytes, fields: &[&str]) -> Result<Vec<Blob>, ServeError> {
    let parts = match form {
        Form::Multipart => from_form(content_type, bytes, fields).await?,
        Form::Raw(mime) => vec![Blob { content_type: mime, bytes }],
    };
    for (blob, field) in parts.iter().zip(fields) {
        if blob.bytes.is_empty() {
            let message = if fields.len() == 1 { "the request carries no image".to_string() } else { format!("field '{field}' is empty") };
            return Err(ServeError::BadRequest { code: "empty_body", message });
        }
    }
    Ok(parts)
}

/// Reads and drops what a refused client is still sending (bounded in bytes
/// and time), so it reads our answer instead of a reset connection: closing
/// a socket with unread bytes makes the kernel send RST, and the client then
/// loses the answer already in its buffer.
pub async fn drain(body: Incoming) {
    drain_stream(&mut body.into_data_stream()).await
}

/// [`drain`] for a body already turned into a stream of chunks (an upload
/// refused part-way, when its file could not be written).
pub async fn drain_stream<S, E>(chunks: &mut S)
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
{
    use futures_util::StreamExt;
    let mut left: usize = 64 << 20;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(chunk)) = chunks.next().await {
            left = left.saturating_sub(chunk.len());
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
    let mut seen = 0;
    while let Some(field) = form.next_field().await.map_err(|e| bad(format!("multipart/form-data: {e}")))? {
        seen += 1;
        if seen > MAX_PARTS {
            return Err(bad(format!("the form has more than {MAX_PARTS} parts; send only the fields {}", fields.join(", "))));
        }
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::StreamExt;
    use http_body_util::StreamBody;

    use super::*;

    type Chunks = Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

    /// `n` chunks of `size` bytes, one every `every`.
    fn every(n: usize, size: usize, every: Duration) -> StreamBody<Chunks> {
        let chunks = futures_util::stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Frame::data(Bytes::from(vec![0u8; size])))
        });
        StreamBody::new(Box::pin(chunks))
    }

    // Real time, kept short: the host's tokio has no paused clock (no `test-util`).
    const PACE: BodyPace = BodyPace { timeout: Duration::from_millis(100), min_rate: 1000 };

    async fn read_all(body: StreamBody<Chunks>) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Paced::new(body, PACE).collect().await?.to_bytes().len())
    }

    #[tokio::test]
    async fn a_body_that_sends_nothing_is_cut_off_at_the_timeout() {
        let silent: Chunks = Box::pin(futures_util::stream::pending());
        let err = read_all(StreamBody::new(silent)).await.unwrap_err();
        let slow = err.downcast::<TooSlow>().unwrap();
        assert_eq!(slow.received, 0);
        assert!(slow.elapsed >= PACE.timeout, "{:?}", slow.elapsed);
    }

    #[tokio::test]
    async fn a_body_faster_than_the_minimum_rate_takes_as_long_as_it_needs() {
        // 2,000 bytes a second for 0.5 s: five times the timeout, twice the rate.
        assert_eq!(read_all(every(10, 100, Duration::from_millis(50))).await.unwrap(), 1000);
    }

    #[tokio::test]
    async fn a_body_that_trickles_is_cut_off_soon_after_the_timeout() {
        let err = read_all(every(100, 1, Duration::from_millis(60))).await.unwrap_err();
        let slow = err.downcast::<TooSlow>().unwrap();
        assert!(slow.received < 5, "{} bytes", slow.received);
    }
}
