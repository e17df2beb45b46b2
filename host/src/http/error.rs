//! The errors an HTTP request can end in, for every entry point: the serving
//! layer's own, and the video room's. `respond::error` gives each its answer.

use std::time::Duration;

use crate::plugin::PluginError;

/// Errors of the serving layer; `respond::error` gives each its HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no route for this path")]
    NotFound,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("rate limit reached; retry in {:.1} s", .0.as_secs_f64())]
    RateLimited(Duration),
    #[error("overloaded: {0}")]
    Overloaded(String),
    #[error("overloaded: this request would be answered in about {} ms, past the {} ms its deadline leaves; retry later", .answer.as_millis(), .left.as_millis())]
    WouldMissDeadline { wait: Duration, answer: Duration, left: Duration },
    #[error("method not allowed here; allowed: {}", .0.join(", "))]
    MethodNotAllowed(Vec<String>),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("the request body is larger than this route's limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error(transparent)]
    BodyTooSlow(super::body::TooSlow),
    #[error("content type '{0}' is not accepted; send image/* bytes or multipart/form-data with an 'image' field")]
    UnsupportedMediaType(String),
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    #[error("the route's deadline of {} ms passed", .0.as_millis())]
    Deadline(Duration),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Video(#[from] VideoError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("the server is shutting down; retry in a moment (another replica, or this one once restarted)")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Errors of the video layer (`crate::video`), defined on this floor so that
/// `respond::error`, the one map to HTTP, can answer them without importing a room above.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// Why the file cannot be read as a video, in ffmpeg's words.
    #[error("{0}")]
    BadVideo(String),
    #[error("the video is larger than this server's limit of {limit} bytes ([video] max_bytes)")]
    TooLarge { limit: u64 },
    #[error("the video is {seconds:.1} s long; this server takes videos up to {max} s ([video] max_seconds)")]
    TooLong { seconds: f64, max: u64 },
    #[error("content type '{0}' is not accepted; send video/* bytes or multipart/form-data with a 'video' field")]
    UnsupportedMediaType(String),
    /// A file ffmpeg recognised but may not open: a playlist or a list of
    /// other files and URLs (hls, concat), or a container not on the allow-list.
    #[error("the upload is a '{0}' file, which this server does not open (playlists and lists of other files or URLs are refused); send one video file: mp4, mov, matroska, webm, avi, mpegts, mpeg, flv or ogg")]
    UnsupportedFormat(String),
    #[error("no video job '{0}' (finished jobs are kept for 10 minutes)")]
    UnknownJob(String),
    #[error("{running} video jobs are running, the most this server runs at once; retry later")]
    Busy { running: usize },
    #[error("video processing is unavailable: {0}")]
    Unavailable(String),
    /// The disk that holds uploads is full: nothing the client can change,
    /// and not worth an immediate retry of a large upload.
    #[error("no space left to store the upload in {0}; free space there, or point TMPDIR at a larger disk")]
    NoSpace(String),
}
