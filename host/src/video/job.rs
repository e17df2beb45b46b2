//! One video job: its event log (what every subscriber replays), its state,
//! and the task that decodes the video and sends each frame through the
//! route, one at a time, in order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::frames::Decoder;
use super::probe::Fps;
use super::upload::TempFile;
use super::Slot;
use crate::chain::Overrides;
use crate::config::VideoSettings;
use crate::plugin::{Blob, PluginError};
use crate::http::{respond, ServeError};
use crate::route;
use crate::state::Shared;
use crate::snapshot::Snapshot;

/// After a full queue or a busy server, how long a frame waits to try again.
const OVERLOAD_PAUSE: Duration = Duration::from_millis(200);

/// What a job will produce, known once the video is probed.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub width: u32,
    pub height: u32,
    /// The rate frames are sampled at: the source's, capped at `max_fps`.
    pub fps: f64,
    /// Frames expected (the decoder may find a few more or fewer).
    pub frames: u64,
    pub duration_s: Option<f64>,
    #[serde(skip)]
    pub rate: Fps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Done,
    Failed,
    Cancelled,
}

pub struct Job {
    pub id: String,
    pub info: Info,
    log: Mutex<Log>,
    /// Bumped on every new event; subscribers wait on it.
    changed: watch::Sender<()>,
    /// Event streams open now, and whether one ever was.
    subscribers: AtomicUsize,
    followed: AtomicBool,
    task: Mutex<Option<AbortHandle>>,
}

struct Log {
    /// Server-Sent Events, ready to send, in order; the last one is
    /// `done` or `failed` once the job ended.
    events: Vec<Bytes>,
    state: State,
    frames_done: u64,
    ended: Option<Instant>,
}

impl Job {
    pub fn new(id: String, info: Info) -> Job {
        Job {
            id,
            info,
            log: Mutex::new(Log { events: Vec::new(), state: State::Running, frames_done: 0, ended: None }),
            changed: watch::Sender::new(()),
            subscribers: AtomicUsize::new(0),
            followed: AtomicBool::new(false),
            task: Mutex::new(None),
        }
    }

    pub fn status(&self) -> Value {
        let log = self.log.lock().expect("job log");
        json!({
            "id": self.id, "state": log.state, "frames_done": log.frames_done, "frames": self.info.frames,
            "fps": self.info.fps, "width": self.info.width, "height": self.info.height, "duration_s": self.info.duration_s,
        })
    }

    pub fn state(&self) -> State {
        self.log.lock().expect("job log").state
    }

    /// When the job stopped running, if it did.
    pub fn ended(&self) -> Option<Instant> {
        self.log.lock().expect("job log").ended
    }

    /// Events from index `from` on, and whether the last of them ends the job.
    pub fn events_from(&self, from: usize) -> (Vec<Bytes>, bool) {
        let log = self.log.lock().expect("job log");
        (log.events.get(from..).unwrap_or_default().to_vec(), log.state != State::Running)
    }

    pub fn watch(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// A new event stream; the returned guard leaves when the stream ends.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::SeqCst);
        self.followed.store(true, Ordering::SeqCst);
        Subscription(self.clone())
    }

    pub fn followed(&self) -> bool {
        self.followed.load(Ordering::SeqCst)
    }

    pub(super) fn set_task(&self, task: AbortHandle) {
        *self.task.lock().expect("job task") = Some(task);
    }

    /// Stops the job: subscribers get a `failed` event with code `cancelled`;
    /// the task is aborted, which kills ffmpeg and removes the upload.
    pub fn cancel(&self, why: &str) {
        if self.end(State::Cancelled, event("failed", &json!({"code": "cancelled", "message": why}))) {
            tracing::info!(job = %self.id, "video job cancelled: {why}");
            if let Some(task) = self.task.lock().expect("job task").take() {
                task.abort();
            }
        }
    }

    fn push_frame(&self, index: u64, result: &str) {
        let time_s = (index as f64 / self.info.fps * 1000.0).round() / 1000.0;
        let data = format!("{{\"index\":{index},\"time_s\":{time_s},\"result\":{result}}}");
        let mut log = self.log.lock().expect("job log");
        if log.state == State::Running {
            log.events.push(sse("frame", &data));
            log.frames_done += 1;
            drop(log);
            self.changed.send_replace(());
        }
    }

    /// Ends a running job with its last event; false if it had ended already.
    fn end(&self, state: State, last: Bytes) -> bool {
        let mut log = self.log.lock().expect("job log");
        if log.state != State::Running {
            return false;
        }
        log.state = state;
        log.events.push(last);
        log.ended = Some(Instant::now());
        drop(log);
        self.changed.send_replace(());
        true
    }
}

/// One open event stream. When the last one closes while the job runs, the
/// job is cancelled: nobody is left to read its results.
pub struct Subscription(Arc<Job>);

impl Drop for Subscription {
    fn drop(&mut self) {
        let left = self.0.subscribers.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && self.0.state() == State::Running {
            self.0.cancel("the last client following the events disconnected");
        }
    }
}

/// Everything a running job holds; dropping it (the job ended or was
/// aborted) kills ffmpeg, removes the upload and frees the job's slot.
pub struct Work {
    pub shared: Arc<Shared>,
    pub snapshot: Arc<Snapshot>,
    pub route: usize,
    /// The route's parameters, checked when the job was accepted.
    pub overrides: Overrides,
    /// Whose token bucket the frames draw from.
    pub client: String,
    pub settings: VideoSettings,
    pub file: TempFile,
    pub slot: Slot,
}

pub async fn run(job: Arc<Job>, work: Work) {
    let started = Instant::now();
    // Generous: ten times the longest video's own length, a minute at least.
    let limit = (work.settings.max_duration * 10).max(Duration::from_secs(60));
    let (state, last) = match tokio::time::timeout(limit, frames(&job, &work)).await {
        Ok(Ok((frames, errors))) => {
            let elapsed = started.elapsed().as_secs_f64();
            let fps = if elapsed > 0.0 { frames as f64 / elapsed } else { 0.0 };
            let data = json!({"frames": frames, "errors": errors, "elapsed_s": round(elapsed), "fps": round(fps)});
            (State::Done, event("done", &data))
        }
        Ok(Err(e)) => (State::Failed, event("failed", &respond::error_object(&e))),
        Err(_) => {
            let e = json!({"code": "deadline_exceeded", "message": format!("the job ran past its limit of {} s", limit.as_secs())});
            (State::Failed, event("failed", &e))
        }
    };
    tracing::info!(job = %job.id, ?state, seconds = started.elapsed().as_secs_f64(), "video job ended");
    job.end(state, last);
}

/// Decodes and answers every frame; (frames, frames answered with an error).
async fn frames(job: &Job, work: &Work) -> Result<(u64, u64), ServeError> {
    let mut decoder = Decoder::start(work.file.path(), job.info.rate, work.settings.max_frames)?;
    let (mut index, mut errors) = (0u64, 0u64);
    while let Some(jpeg) = decoder.next().await? {
        let result = one_frame(work, jpeg).await;
        errors += u64::from(result.starts_with("{\"error\""));
        job.push_frame(index, &result);
        index += 1;
    }
    // ffmpeg decodes a truncated file up to the cut and exits 0, with errors:
    // fewer frames than the container promised, plus complaints, is a failure.
    if let Some(why) = decoder.complaints().filter(|_| index < job.info.frames) {
        let message = format!("the video stops after {index} of {} frames: {why}", job.info.frames);
        return Err(super::VideoError::BadVideo(message).into());
    }
    Ok((index, errors))
}

/// One frame through the route, as a client's request would go; its JSON
/// answer, or `{"error": {...}}`. Limits push back rather than fail: an
/// empty token bucket, a full queue, or a turn refused (at once, or when it
/// came too late to finish) means wait and try again.
async fn one_frame(work: &Work, jpeg: Bytes) -> String {
    let route = &work.snapshot.routes[work.route];
    loop {
        if let Some(limit) = route.rate_limit {
            if let Err(wait) = work.shared.limiter.check(&route.path, &work.client, limit).await {
                tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
                continue;
            }
        }
        let upload = Blob { content_type: "image/jpeg".into(), bytes: jpeg.clone() };
        let id = work.shared.request_id();
        match route::run_upload(&work.shared, work.snapshot.clone(), work.route, upload, work.overrides.clone(), id).await {
            Ok(body) => return json_text(body),
            Err(ServeError::Overloaded(_) | ServeError::WouldMissDeadline { .. } | ServeError::NotInTime(_) | ServeError::Plugin(PluginError::Overloaded(_))) => tokio::time::sleep(OVERLOAD_PAUSE).await,
            Err(e) => return json!({"error": respond::error_object(&e)}).to_string(),
        }
    }
}

/// An answer as one line of JSON (an SSE `data:` line may not break).
fn json_text(body: Bytes) -> String {
    match std::str::from_utf8(&body) {
        Ok(text) if !text.contains('\n') && !text.is_empty() => text.to_string(),
        _ => serde_json::from_slice::<Value>(&body).map_or_else(|_| "null".into(), |v| v.to_string()),
    }
}

fn event(name: &str, data: &Value) -> Bytes {
    sse(name, &data.to_string())
}

fn sse(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
