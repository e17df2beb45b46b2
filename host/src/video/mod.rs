//! Video jobs: `POST /v1/videos` takes a video, `ffprobe` checks it, and a
//! job sends its frames (decoded by `ffmpeg`) one by one through a route of
//! the snapshot, with that route's cache, queues and limits. Clients follow
//! the results as Server-Sent Events.
//!
//! - `upload`: the request body streamed to a temporary file.
//! - `probe`: `ffprobe`: size, rate, length of the video stream.
//! - `frames`: `ffmpeg` decoding to JPEGs on a pipe, cut into frames.
//! - `job`: a job's event log and state, and the task that runs it.
//! - `events`: the `text/event-stream` answer of one subscriber.
//!
//! Endpoints: `POST /v1/videos?route=/v1/detect/fast&conf=0.3` (202),
//! `GET /v1/videos/{id}` (status), `GET /v1/videos/{id}/events` (SSE),
//! `DELETE /v1/videos/{id}` (cancel). Bounds are `[video]` in the config.

mod events;
mod frames;
pub mod job;
pub mod probe;
pub mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::config::VideoSettings;
use crate::http::respond::{self, Body};
use crate::http::ServeError;
pub use crate::http::VideoError;
use crate::route;
use crate::state::Shared;
use crate::snapshot::Snapshot;
use job::{Info, Job, Work};

/// The route a job runs when the client names none.
const DEFAULT_ROUTE: &str = "/v1/detect/fast";
/// How long an ended job's results stay readable.
const KEEP_ENDED: Duration = Duration::from_secs(600);
/// Ended jobs kept at most, whatever their age: bounds memory under many short jobs.
const MAX_ENDED: usize = 64;
/// An upload holds a job slot: a client trickling bytes must not hold it forever.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// ffmpeg or ffprobe could not run: a problem of the server, not the video.
fn tool_failed(tool: &str, e: &std::io::Error) -> VideoError {
    match e.kind() {
        std::io::ErrorKind::NotFound => VideoError::Unavailable(format!("{tool} is not installed on the server (apt-get install ffmpeg)")),
        _ => VideoError::Unavailable(format!("cannot run {tool}: {e}")),
    }
}

/// What a request under `/v1/videos` asks for.
pub enum Op {
    Submit,
    Status(String),
    Events(String),
    Cancel(String),
}

/// The video endpoint of a method and path: `None` when the path is not
/// one; `Err` with the methods allowed when only the method is wrong.
pub fn find(method: &str, path: &str) -> Option<Result<Op, Vec<String>>> {
    let rest = path.strip_prefix("/v1/videos")?;
    if rest.is_empty() {
        return Some(if method == "POST" { Ok(Op::Submit) } else { Err(vec!["POST".into()]) });
    }
    let rest = rest.strip_prefix('/')?;
    let (id, tail) = rest.split_once('/').map_or((rest, None), |(id, tail)| (id, Some(tail)));
    if id.is_empty() {
        return None;
    }
    let id = id.to_string();
    Some(match (method, tail) {
        ("GET" | "HEAD", None) => Ok(Op::Status(id)),
        ("DELETE", None) => Ok(Op::Cancel(id)),
        (_, None) => Err(vec!["GET".into(), "DELETE".into()]),
        ("GET", Some("events")) => Ok(Op::Events(id)),
        (_, Some("events")) => Err(vec!["GET".into()]),
        _ => return None,
    })
}

/// One request under `/v1/videos`; `jobs` are the server's, running and recently ended.
pub async fn handle(shared: &Arc<Shared>, jobs: &Jobs, snapshot: Arc<Snapshot>, op: Op, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, ServeError> {
    match op {
        Op::Submit => submit(shared, jobs, snapshot, req, peer).await,
        Op::Status(id) => Ok(respond::json_response(StatusCode::OK, &jobs.get(&id)?.status())),
        Op::Events(id) => Ok(events::stream(jobs.get(&id)?)),
        Op::Cancel(id) => {
            jobs.get(&id)?.cancel("cancelled by DELETE");
            Ok(respond::no_content())
        }
    }
}

/// Accepts a video: route and parameters first (a 400 costs no upload), a
/// job slot, the upload, the probe; then the job starts and the answer
/// says where to follow it.
async fn submit(shared: &Arc<Shared>, jobs: &Jobs, snapshot: Arc<Snapshot>, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, ServeError> {
    let settings = snapshot.config.video.clone();
    let client = route::client(snapshot.config.server.api_key_header.as_deref(), req.headers(), peer);
    let (route_path, query) = split_query(req.uri().query());
    let (parts, body) = req.into_parts();
    let checked = single_input_route(&snapshot, &route_path).and_then(|index| {
        let chain = &snapshot.routes[index].chain;
        let overrides = chain.overrides(query.as_deref()).map_err(|message| ServeError::BadRequest { code: "bad_param", message })?;
        Ok((index, overrides, jobs.reserve(settings.max_jobs)?))
    });
    let (index, overrides, slot) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            // A client still sending would read a reset connection, not our answer.
            crate::http::body::drain(body).await;
            return Err(e);
        }
    };
    let id = crate::state::random_id();
    let file = tokio::time::timeout(UPLOAD_TIMEOUT, upload::receive(&parts.headers, body, &id, settings.max_bytes))
        .await
        .map_err(|_| ServeError::BadRequest { code: "bad_body", message: format!("the upload took longer than {} s", UPLOAD_TIMEOUT.as_secs()) })??;
    let probe = probe::probe(file.path()).await?;
    if let Some(seconds) = probe.duration_s.filter(|s| *s > settings.max_duration.as_secs_f64()) {
        return Err(VideoError::TooLong { seconds, max: settings.max_duration.as_secs() }.into());
    }
    let info = plan(&probe, &settings);
    let job = Arc::new(Job::new(id.clone(), info.clone()));
    jobs.insert(job.clone());
    let work = Work { shared: shared.clone(), snapshot, route: index, overrides, client, settings: settings.clone(), file, slot };
    let task = tokio::spawn(job::run(job.clone(), work));
    job.set_task(task.abort_handle());
    // Nobody to read the results: a job unfollowed for idle_cancel is cancelled.
    let watched = Arc::downgrade(&job);
    tokio::spawn(async move {
        tokio::time::sleep(settings.idle_cancel).await;
        if let Some(job) = watched.upgrade().filter(|j| !j.followed()) {
            job.cancel(&format!("nobody followed the events within {} s", settings.idle_cancel.as_secs()));
        }
    });
    tracing::info!(job = %id, route = %route_path, frames = info.frames, fps = info.fps, "video job started");
    let mut answer = serde_json::to_value(&info).expect("info serialises");
    answer["id"] = json!(id);
    answer["events"] = json!(format!("/v1/videos/{id}/events"));
    Ok(respond::json_response(StatusCode::ACCEPTED, &answer))
}

/// `route=` out of the query; the rest are the route's own parameters.
fn split_query(query: Option<&str>) -> (String, Option<String>) {
    let mut route = DEFAULT_ROUTE.to_string();
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "route" {
            route = v.into_owned();
        } else {
            rest.append_pair(&k, &v);
            any = true;
        }
    }
    (route, any.then(|| rest.finish()))
}

/// The POST route at `path` that takes one image.
fn single_input_route(snapshot: &Snapshot, path: &str) -> Result<usize, ServeError> {
    let single = |r: &crate::snapshot::Route| r.method == "POST" && r.branches.is_empty();
    match snapshot.routes.iter().position(|r| r.path == path && single(r)) {
        Some(i) => Ok(i),
        None => {
            let known: Vec<&str> = snapshot.routes.iter().filter(|r| single(r)).map(|r| r.path.as_str()).collect();
            let message = format!("route '{path}' is not a route of one image; video jobs can run: {}", known.join(", "));
            Err(ServeError::BadRequest { code: "bad_route", message })
        }
    }
}

/// Sampling rate and frame count: the source's rate up to `max_fps`.
fn plan(p: &probe::Probe, settings: &VideoSettings) -> Info {
    let capped = p.fps.per_second() > f64::from(settings.max_fps);
    let rate = if capped { probe::Fps { num: u64::from(settings.max_fps), den: 1 } } else { p.fps };
    let fps = rate.per_second();
    let frames = match (p.frames, p.duration_s) {
        (Some(n), _) if !capped => n,
        (_, Some(d)) => (d * fps).round().max(1.0) as u64,
        (Some(n), None) => n,
        (None, None) => settings.max_frames as u64,
    };
    let fps_rounded = (fps * 1000.0).round() / 1000.0;
    Info { width: p.width, height: p.height, fps: fps_rounded, frames: frames.min(settings.max_frames as u64), duration_s: p.duration_s, rate }
}

/// The jobs of this server: running, and ended ones for a while.
#[derive(Default)]
pub struct Jobs {
    table: Mutex<HashMap<String, Arc<Job>>>,
    running: Arc<AtomicUsize>,
}

/// A running job's place among `max_jobs`, given back when dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Jobs {
    fn reserve(&self, max: usize) -> Result<Slot, VideoError> {
        self.running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .map(|_| Slot(self.running.clone()))
            .map_err(|running| VideoError::Busy { running })
    }

    fn insert(&self, job: Arc<Job>) {
        let mut table = self.table.lock().expect("jobs");
        sweep(&mut table);
        table.insert(job.id.clone(), job);
    }

    pub fn get(&self, id: &str) -> Result<Arc<Job>, VideoError> {
        let mut table = self.table.lock().expect("jobs");
        sweep(&mut table);
        table.get(id).cloned().ok_or_else(|| VideoError::UnknownJob(id.to_string()))
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

/// Drops ended jobs older than `KEEP_ENDED`, and the oldest beyond `MAX_ENDED`.
fn sweep(table: &mut HashMap<String, Arc<Job>>) {
    table.retain(|_, j| j.ended().is_none_or(|t| t.elapsed() < KEEP_ENDED));
    let mut ended: Vec<(Instant, String)> = table.values().filter_map(|j| j.ended().map(|t| (t, j.id.clone()))).collect();
    if ended.len() > MAX_ENDED {
        ended.sort();
        for (_, id) in &ended[..ended.len() - MAX_ENDED] {
            table.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_endpoints() {
        assert!(matches!(find("POST", "/v1/videos"), Some(Ok(Op::Submit))));
        assert!(matches!(find("GET", "/v1/videos"), Some(Err(m)) if m == ["POST"]));
        assert!(matches!(find("GET", "/v1/videos/ab12"), Some(Ok(Op::Status(id))) if id == "ab12"));
        assert!(matches!(find("DELETE", "/v1/videos/ab12"), Some(Ok(Op::Cancel(_)))));
        assert!(matches!(find("GET", "/v1/videos/ab12/events"), Some(Ok(Op::Events(_)))));
        assert!(matches!(find("POST", "/v1/videos/ab12/events"), Some(Err(_))));
        assert!(find("GET", "/v1/videos/ab12/other").is_none());
        assert!(find("GET", "/v1/videosx").is_none());
        assert!(find("GET", "/v1/detect").is_none());
    }

    #[test]
    fn route_is_taken_out_of_the_query() {
        assert_eq!(split_query(None), (DEFAULT_ROUTE.to_string(), None));
        assert_eq!(split_query(Some("route=/v1/detect&conf=0.3")), ("/v1/detect".to_string(), Some("conf=0.3".to_string())));
        assert_eq!(split_query(Some("route=%2Fv1%2Fclassify")), ("/v1/classify".to_string(), None));
    }

    #[test]
    fn sampling_is_capped_at_max_fps() {
        let settings = VideoSettings::default();
        let p = probe::Probe { width: 8, height: 8, fps: probe::Fps { num: 60, den: 1 }, duration_s: Some(2.0), frames: Some(120) };
        let info = plan(&p, &settings);
        assert_eq!((info.fps, info.frames, info.rate.to_string()), (30.0, 60, "30/1".to_string()));
        let p = probe::Probe { fps: probe::Fps { num: 5, den: 1 }, frames: Some(10), ..p };
        assert_eq!(plan(&p, &settings).frames, 10);
        let long = probe::Probe { frames: Some(100_000), ..p };
        assert_eq!(plan(&long, &settings).frames, settings.max_frames as u64);
    }
}
