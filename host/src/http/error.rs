//! The errors an HTTP request can end in, for every entry point: the serving
//! layer's own, and the video and stream rooms'. `respond::error` gives each its answer.

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
    /// `bound`: four fifths of what the deadline leaves (`turns::HEADROOM`).
    #[error("overloaded: this request would be answered in about {} ms, past the {} ms it is given (four fifths of what its deadline leaves); retry later", .answer.as_millis(), .bound.as_millis())]
    WouldMissDeadline { wait: Duration, answer: Duration, bound: Duration },
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
    /// It waited for a turn and got none in time to finish: never started.
    #[error("overloaded: {0}; retry later")]
    NotInTime(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Video(#[from] VideoError),
    #[error(transparent)]
    Stream(#[from] StreamError),
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

/// Errors of the live streams (`crate::stream`), defined here for the same reason as `VideoError`.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("live streams are off: the config has no [streams] section")]
    Off,
    #[error("live streams need the admin token: set [admin] token or OSPREY_ADMIN_TOKEN")]
    NoToken,
    #[error("{0}")]
    BadRequest(String),
    #[error("pulling from host '{0}' is not allowed ([streams] allow)")]
    NotAllowed(String),
    #[error("no stream '{0}'")]
    Unknown(String),
    #[error("{running} streams are running, the most this server runs at once ([streams] max_streams)")]
    Busy { running: usize },
    #[error("no free port for an RTMP listener in [streams] ports {first}-{last}")]
    NoPort { first: u16, last: u16 },
    #[error("this stream is watermarked: open it with a viewer token (?viewer=..., from POST /v1/streams/ID/viewers)")]
    ViewerRequired,
    #[error("segment {0} is not (or no longer) available")]
    NoSegment(u64),
    #[error("the clip cannot be read: {0}")]
    BadClip(String),
    #[error("live streams are unavailable: {0}")]
    Unavailable(String),
    /// Inside a stream (never an HTTP answer, a log line and a state).
    #[error("the ingest failed: {0}")]
    Ingest(String),
    #[error("a publisher gave the wrong stream key")]
    Refused,
    #[error("the encoder failed: {0}")]
    Egress(String),
}

impl StreamError {
    /// ffmpeg could not run: a problem of the server.
    pub fn tool(tool: &str, e: &std::io::Error) -> StreamError {
        match e.kind() {
            std::io::ErrorKind::NotFound => StreamError::Unavailable(format!("{tool} is not installed on the server (apt-get install ffmpeg)")),
            _ => StreamError::Unavailable(format!("cannot run {tool}: {e}")),
        }
    }
}
