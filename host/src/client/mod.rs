//! `osprey client`: the command-line client of a running server.
//!
//! - `images`: `detect` and `classify` on photos, as tables or JSON.
//! - `video`: uploads a video, follows its events with a progress bar, and
//!   sums the detections up per second of video.
//!
//! Exit codes: 0 when everything was answered, 1 when the server refused or
//! could not be reached, 2 for usage and file errors (as clap's own).

mod images;
mod video;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Detect objects in images: a table per image (label, score, box).
    Detect {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// The fast detector (/v1/detect/fast) instead of the precise one.
        #[arg(long)]
        fast: bool,
        /// Print the server's JSON answers, one line per image.
        #[arg(long)]
        json: bool,
        /// The server (default: $OSPREY_URL, else http://127.0.0.1:8080).
        #[arg(long)]
        url: Option<String>,
    },
    /// Classify images: the most likely classes of each.
    Classify {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// How many classes to list (the server's default otherwise).
        #[arg(long)]
        top: Option<u32>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        url: Option<String>,
    },
    /// Detect objects in a video: progress while the server works, then a
    /// summary per second of video.
    Video {
        file: PathBuf,
        #[arg(long)]
        fast: bool,
        #[arg(long)]
        url: Option<String>,
    },
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The server refused, failed, or could not be reached: exit 1.
    Server(String),
    /// A file that cannot be read, or a bad argument: exit 2.
    Usage(String),
}

impl Failure {
    fn code(&self) -> i32 {
        match self {
            Failure::Server(_) => 1,
            Failure::Usage(_) => 2,
        }
    }
}

/// Runs a client command; its exit code. Messages go to stderr, results to stdout.
pub fn run(command: ClientCommand) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("osprey: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let failures = runtime.block_on(async {
        match command {
            ClientCommand::Detect { images, fast, json, url } => {
                let path = if fast { "/v1/detect/fast" } else { "/v1/detect" };
                images::run(&Server::new(url)?, path, String::new(), &images, json, images::Kind::Detect).await
            }
            ClientCommand::Classify { images, top, json, url } => {
                let query = top.map(|n| format!("?top={n}")).unwrap_or_default();
                images::run(&Server::new(url)?, "/v1/classify", query, &images, json, images::Kind::Classify).await
            }
            ClientCommand::Video { file, fast, url } => {
                let route = if fast { "/v1/detect/fast" } else { "/v1/detect" };
                video::run(&Server::new(url)?, route, &file).await.map_err(|f| vec![f])
            }
        }
    });
    match failures {
        Ok(()) => 0,
        Err(failures) => {
            for f in &failures {
                match f {
                    Failure::Server(m) | Failure::Usage(m) => eprintln!("osprey: {m}"),
                }
            }
            failures.iter().map(Failure::code).max().unwrap_or(1)
        }
    }
}

/// The server the client talks to.
pub struct Server {
    base: String,
    http: reqwest::Client,
}

impl Server {
    fn new(url: Option<String>) -> Result<Server, Vec<Failure>> {
        let base = url.or_else(|| std::env::var("OSPREY_URL").ok()).unwrap_or_else(|| DEFAULT_URL.into());
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(vec![Failure::Usage(format!("--url {base}: give an http:// or https:// URL, like {DEFAULT_URL}"))]);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| vec![Failure::Server(format!("cannot set up HTTP: {e}"))])?;
        Ok(Server { base, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body`; the JSON answer of a 2xx, else the server's error message.
    async fn post(&self, path: &str, content_type: &str, body: Vec<u8>, timeout: Duration) -> Result<Value, Failure> {
        let resp = self.http.post(self.url(path)).header("content-type", content_type).body(body).timeout(timeout).send().await;
        let resp = resp.map_err(|e| self.unreachable(&e))?;
        json_of(resp).await
    }

    /// A failed exchange, in words that name the server and the fix.
    fn unreachable(&self, e: &reqwest::Error) -> Failure {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        let message = if e.is_connect() {
            format!("cannot reach the server at {}: {cause} (is `osprey serve` running there? set --url or OSPREY_URL)", self.base)
        } else if e.is_timeout() {
            format!("the server at {} did not answer in time", self.base)
        } else {
            format!("talking to the server at {}: {cause}", self.base)
        };
        Failure::Server(message)
    }
}

/// The body of a 2xx answer as JSON; otherwise the server's own error
/// message (`{"error": {"code", "message"}}`) with the status.
async fn json_of(resp: reqwest::Response) -> Result<Value, Failure> {
    let status = resp.status();
    let text = resp.text().await.map_err(|e| Failure::Server(format!("reading the answer: {e}")))?;
    let json: Option<Value> = serde_json::from_str(&text).ok();
    if status.is_success() {
        return json.ok_or_else(|| Failure::Server(format!("the server answered {status} with no JSON: {}", text.trim())));
    }
    let error = json.as_ref().map(|j| &j["error"]);
    let message = match error.and_then(|e| e["message"].as_str()) {
        Some(m) => format!("{m} ({} {})", status.as_u16(), error.and_then(|e| e["code"].as_str()).unwrap_or("error")),
        None => format!("the server answered {status}: {}", text.trim()),
    };
    Err(Failure::Server(message))
}

/// A file's bytes, or a usage error that names it.
async fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    tokio::fs::read(path).await.map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))
}

/// The content type to send a file as, from its extension.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "avi" => "video/x-msvideo",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_trimmed() {
        let s = Server::new(Some("http://10.0.0.1:9000/".into())).unwrap();
        assert_eq!(s.url("/v1/detect"), "http://10.0.0.1:9000/v1/detect");
        let Err(f) = Server::new(Some("10.0.0.1:9000".into())) else { panic!("accepted a URL without scheme") };
        assert_eq!(f[0].code(), 2);
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type(Path::new("a/dog.JPG")), "image/jpeg");
        assert_eq!(content_type(Path::new("clip.mp4")), "video/mp4");
        assert_eq!(content_type(Path::new("notes.txt")), "application/octet-stream");
    }
}
