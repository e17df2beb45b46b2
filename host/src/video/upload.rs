//! The uploaded video, streamed to a temporary file within `[video]
//! max_bytes`: raw `video/*` bytes or the `video` field of a form. The file
//! goes away with its `TempFile`, however the job ends.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use tokio::io::AsyncWriteExt;

use super::VideoError;
use crate::http::ServeError;

/// The multipart field that carries the video.
const FIELD: &str = "video";

/// A file under `$TMPDIR/osprey-videos/`, removed when dropped.
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where the upload of job `id` is kept (tests check that it is gone).
pub fn path_of(id: &str) -> PathBuf {
    std::env::temp_dir().join("osprey-videos").join(format!("{id}.upload"))
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let unlink = Unlink(std::mem::take(&mut self.path));
        // Off the async workers when there are some. A runtime shutting down
        // drops the closure unrun, and `Unlink` then removes the file itself.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(unlink))),
            Err(_) => drop(unlink),
        }
    }
}

/// Removes a file when dropped, wherever that happens.
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", self.0.display());
            }
        }
    }
}

/// Streams the request body of job `id` into its temporary file.
pub async fn receive(headers: &HeaderMap, body: Incoming, id: &str, limit: u64) -> Result<TempFile, ServeError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        crate::http::body::drain(body).await;
        return Err(VideoError::TooLarge { limit }.into());
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let file = TempFile { path: path_of(id) };
    if let Some(dir) = file.path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| internal(dir, e))?;
    }
    let written = if mime == "multipart/form-data" {
        let boundary = multer::parse_boundary(&content_type).map_err(|e| bad_form(format!("multipart/form-data: {e}")))?;
        let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
        loop {
            match form.next_field().await.map_err(|e| bad_form(format!("multipart/form-data: {e}")))? {
                None => return Err(bad_form(format!("the form has no field named '{FIELD}'"))),
                Some(mut field) if field.name() == Some(FIELD) => match write(&file.path, &mut field, limit).await {
                    Ok(written) => break written,
                    Err(e) => {
                        crate::http::body::drain_stream(&mut field).await;
                        drop(field);
                        while let Ok(Some(mut rest)) = form.next_field().await {
                            crate::http::body::drain_stream(&mut rest).await;
                        }
                        return Err(e);
                    }
                },
                Some(_) => continue,
            }
        }
    } else if mime.is_empty() || mime.starts_with("video/") || mime == "application/octet-stream" {
        let mut chunks = body.into_data_stream();
        match write(&file.path, &mut chunks, limit).await {
            Ok(written) => written,
            Err(e) => {
                crate::http::body::drain_stream(&mut chunks).await;
                return Err(e);
            }
        }
    } else {
        crate::http::body::drain(body).await;
        return Err(VideoError::UnsupportedMediaType(content_type).into());
    };
    if written == 0 {
        return Err(ServeError::BadRequest { code: "empty_body", message: "the request carries no video".into() });
    }
    Ok(file)
}

/// Copies `chunks` into a new file at `path`, stopping past `limit` bytes.
/// On an error the rest is left in `chunks` for the caller to drain.
async fn write<S, E>(path: &Path, chunks: &mut S, limit: u64) -> Result<u64, ServeError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let file = tokio::fs::File::create(path).await.map_err(|e| internal(path, e))?;
    // Large writes: fewer trips to the blocking pool per upload.
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ServeError::BadRequest { code: "bad_body", message: format!("cannot read the request body: {e}") })?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(VideoError::TooLarge { limit }.into());
        }
        out.write_all(&chunk).await.map_err(|e| internal(path, e))?;
    }
    out.flush().await.map_err(|e| internal(path, e))?;
    Ok(written)
}

fn bad_form(message: String) -> ServeError {
    ServeError::BadRequest { code: "bad_form", message }
}

/// A full disk (or quota) is the server's state, not a bug: 507 naming the
/// folder, so the operator knows what to free; other errors stay 500.
fn internal(path: &Path, e: std::io::Error) -> ServeError {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    match e.kind() {
        StorageFull | QuotaExceeded => {
            let dir = path.parent().unwrap_or(path);
            tracing::warn!("video upload refused: {} is full ({e})", dir.display());
            VideoError::NoSpace(dir.display().to_string()).into()
        }
        _ => ServeError::Internal(format!("storing the upload at {}: {e}", path.display())),
    }
}
