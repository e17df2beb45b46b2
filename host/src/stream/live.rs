//! One running stream: the ingest supervisor (restarts ffmpeg when frames
//! stop), the newest-wins hand-over, and the frame loop: the gate, the
//! route's chain on changed frames, the marks, the encoders, the events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

use super::egress::Feed;
use super::gate::{self, Cells};
use super::ingest::{Ingest, Shape};
use super::viewers;
use super::{Source, StreamError};
use crate::chain::Overrides;
use crate::config::GateThresholds;
use crate::http::respond::{self, Answer};
use crate::http::ServeError;
use crate::metrics::{StreamFrameLabels, StreamLabel};
use crate::plugin::Blob;
use crate::route::{self, Ask, Caching, Input, Passthrough};
use crate::state::Shared;

/// What a stream was asked to do, checked when it was created.
#[derive(Debug, Clone)]
pub struct Spec {
    pub source: Source,
    /// The route each changed frame runs through, and its parameters (a query string).
    pub route: String,
    pub params: Option<String>,
    pub gate: GateThresholds,
    pub watermark: bool,
    pub shape: Shape,
    pub bits: u32,
    pub cpu: f64,
    pub lag: Duration,
    pub stall: Duration,
    pub watermark_route: String,
}

/// Counters of a stream, for its status, its events and the metrics.
#[derive(Default)]
pub struct Stats {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub filled: AtomicU64,
    pub skipped: AtomicU64,
    pub busy: AtomicU64,
    pub dropped: AtomicU64,
    pub processed: AtomicU64,
    pub restarts: AtomicU64,
    pub refused_publishers: AtomicU64,
    /// Age of the last frame written out, in microseconds.
    pub lag_us: AtomicU64,
    /// Time of the last changed frame in the chain and marks, in microseconds.
    pub stage_us: AtomicU64,
}

pub struct Live {
    pub id: String,
    pub spec: Spec,
    pub stats: Stats,
    pub state: Mutex<&'static str>,
    pub events: broadcast::Sender<Bytes>,
    pub dir: std::path::PathBuf,
    /// Frames waiting for the loop, oldest first; at most half a second of
    /// them (ffmpeg hands over its first half second at once, as it starts):
    /// when full, the oldest is dropped: the newest frames win.
    latest: Mutex<std::collections::VecDeque<Frame>>,
    arrived: Notify,
}

impl Live {
    pub fn new(id: String, spec: Spec, dir: std::path::PathBuf) -> Live {
        Live {
            id,
            spec,
            stats: Stats::default(),
            state: Mutex::new("waiting"),
            events: broadcast::channel(256).0,
            dir,
            latest: Mutex::new(std::collections::VecDeque::new()),
            arrived: Notify::new(),
        }
    }

    pub fn state(&self) -> &'static str {
        *self.state.lock().expect("stream state")
    }

    fn set_state(&self, s: &'static str) {
        let mut state = self.state.lock().expect("stream state");
        if *state != s {
            *state = s;
            drop(state);
            tracing::info!(stream = %self.id, state = s, "stream state");
            let _ = self.events.send(sse("state", &json!({"state": s})));
        }
    }

    fn count(&self, what: &str) {
        crate::metrics::global().stream_frames.get_or_create(&StreamFrameLabels { stream: self.id.clone(), frames: what.into() }).inc();
    }

    /// Hands a frame to the loop; past the room, the oldest waiting is dropped.
    fn put(&self, frame: Frame) {
        let room = (self.spec.shape.fps as usize / 2).max(2);
        let replaced = {
            let mut waiting = self.latest.lock().expect("latest frame");
            waiting.push_back(frame);
            waiting.len() > room && waiting.pop_front().is_some()
        };
        if replaced {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.count("dropped");
        }
        self.arrived.notify_one();
    }

    async fn take(&self, within: Duration) -> Option<Frame> {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Some(f) = self.latest.lock().expect("latest frame").pop_front() {
                return Some(f);
            }
            if tokio::time::timeout_at(until, self.arrived.notified()).await.is_err() {
                return self.latest.lock().expect("latest frame").pop_front();
            }
        }
    }

    pub fn status(&self) -> Value {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (skipped, out_from_input) = (get(&s.skipped), get(&s.frames_out).saturating_sub(get(&s.filled)));
        json!({
            "id": self.id, "state": self.state(), "route": self.spec.route, "watermark": self.spec.watermark,
            "width": self.spec.shape.width, "height": self.spec.shape.height, "fps": self.spec.shape.fps,
            "frames": {"in": get(&s.frames_in), "out": get(&s.frames_out), "filled": get(&s.filled), "skipped": skipped,
                       "busy": get(&s.busy), "dropped": get(&s.dropped), "processed": get(&s.processed)},
            "skip_rate": if out_from_input == 0 { 0.0 } else { round(skipped as f64 / out_from_input as f64) },
            "lag_ms": round(get(&s.lag_us) as f64 / 1e3), "stage_ms": round(get(&s.stage_us) as f64 / 1e3),
            "restarts": get(&s.restarts), "refused_publishers": get(&s.refused_publishers),
        })
    }
}

/// Reads frames from the ingest for as long as the stream lives, starting
/// ffmpeg again when it ends or its frames stop for `stall`.
pub async fn supervise(live: Arc<Live>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = Instant::now();
        let (mut ingest, complaints) = match Ingest::start(&live.spec.source, live.spec.shape) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(stream = %live.id, "cannot start the ingest: {e}");
                live.set_state("failed");
                return;
            }
        };
        live.set_state(if matches!(live.spec.source, Source::Push { .. }) { "waiting" } else { "connecting" });
        let mut seen = false;
        let refusal = ingest.refusal();
        let mut ended = loop {
            // Before the first frame a pushed stream waits for its publisher
            // as long as it takes; a pulled one, and any stream once live,
            // is restarted after `stall` without a frame.
            let wait = if seen || !matches!(live.spec.source, Source::Push { .. }) { live.spec.stall } else { Duration::from_secs(86_400) };
            match tokio::time::timeout(wait, ingest.next()).await {
                Ok(Ok(Some(rgb))) => {
                    if !seen {
                        seen = true;
                        live.set_state("live");
                    }
                    live.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    live.count("in");
                    // What the gate sees of it, here beside the frame loop.
                    let shape = live.spec.shape;
                    let cells = Cells::of_rgb(shape.width as usize, shape.height as usize, &rgb);
                    live.put(Frame { cells, rgb: Arc::new(rgb), arrived: Instant::now() });
                }
                Ok(Ok(None)) => break "the input ended".to_string(),
                Ok(Err(StreamError::Refused)) => {
                    live.stats.refused_publishers.fetch_add(1, Ordering::Relaxed);
                    break "a publisher gave the wrong stream key".to_string();
                }
                Ok(Err(e)) => break e.to_string(),
                Err(_) => break format!("no frame for {} ms", live.spec.stall.as_millis()),
            }
        };
        drop(ingest);
        let said = complaints.0.await.unwrap_or_default();
        // ffmpeg may end on a refused publisher before its warning was read.
        if refusal.load(std::sync::atomic::Ordering::SeqCst) && !ended.contains("stream key") {
            live.stats.refused_publishers.fetch_add(1, Ordering::Relaxed);
            ended = "a publisher gave the wrong stream key".to_string();
        }
        tracing::warn!(stream = %live.id, "ingest restarts: {ended}; ffmpeg said: {}", said.join(" | "));
        live.stats.restarts.fetch_add(1, Ordering::Relaxed);
        live.set_state("stalled");
        backoff = if started.elapsed() > Duration::from_secs(10) { Duration::from_millis(250) } else { (backoff * 2).min(Duration::from_secs(5)) };
        tokio::time::sleep(backoff).await;
    }
}

/// What the last changed frame gave: reused by the frames the gate skips.
struct Last {
    cells: Cells,
    /// Output pixels per variant (one without watermarks), RGB.
    rgb: Vec<Arc<Vec<u8>>>,
    /// The segment the marks in `rgb` belong to.
    segment: u64,
    result: Arc<str>,
}

/// The frame loop: one frame at a time, newest first, out at the stream's rate.
pub async fn frames(live: Arc<Live>, shared: Arc<Shared>) -> Result<(), StreamError> {
    let shape = live.spec.shape;
    let variants: u8 = if live.spec.watermark { 2 } else { 1 };
    let mut encoders = Vec::new();
    let mut encoding = Vec::new();
    for v in 0..variants {
        let (feed, task) = Feed::start(&live.dir, v, shape)?;
        encoders.push(feed);
        encoding.push(AbortOnDrop(task));
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(shape.fps));
    let label = StreamLabel { stream: live.id.clone() };
    let mut last: Option<Last> = None;
    let mut index = 0u64;
    let mut stalled = false;
    // The chain's CPU budget: seconds it may still spend, refilled at `cpu` a second, at most one second's worth.
    let (mut budget, mut refilled) = (live.spec.cpu, Instant::now());
    // Without watermarks a frame's pixels go out at once and the route runs
    // beside the loop, one frame at a time: changed frames that come while it
    // runs are `busy` (the last result reused), and frame events wait for
    // the result in flight so they leave in order. With watermarks the marks
    // are the pixels: the loop waits for them (and the route) on each changed frame.
    let mut running: Option<tokio::task::JoinHandle<(String, Duration)>> = None;
    let mut waiting: Vec<Pending> = Vec::new();
    // When frame 0 went out, and the pixels last sent to each encoder.
    let mut clock: Option<Instant> = None;
    let mut sent: Vec<Arc<Vec<u8>>>;
    loop {
        // Two frame times without input: the publisher stalls; the output
        // keeps its rate with the last frame, once a frame time, until input comes back.
        let wait = if stalled { interval } else { interval * 2 };
        let taken = tokio::select! {
            f = live.take(wait) => f,
            done = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                running = None;
                let (result, took) = done.unwrap_or_else(|e| (json!({"error": {"code": "internal", "message": e.to_string()}}).to_string(), Duration::ZERO));
                budget -= took.as_secs_f64();
                record_stage(&live, &label, took);
                let result: Arc<str> = Arc::from(result.as_str());
                if let Some(l) = last.as_mut() {
                    l.result = result.clone();
                }
                for p in waiting.drain(..) {
                    p.send(&live, &result);
                }
                continue;
            }
        };
        let Some(Frame { cells, rgb: pixels, arrived }) = taken else {
            stalled = true;
            if let Some(l) = &last {
                fill(&live, &encoders, &l.rgb).await?;
                index += 1;
            }
            continue;
        };
        stalled = false;
        let now = Instant::now();
        let segment = index / u64::from(shape.fps);
        // A new segment must be marked anew (its frames carry their
        // segment's number): the gate never skips the first frame of a
        // segment, which also makes a fresh frame at least once a second.
        let same_segment = last.as_ref().filter(|l| l.segment == segment);
        let refilled_budget = (budget + now.duration_since(refilled).as_secs_f64() * live.spec.cpu).min(live.spec.cpu);
        let (skipped, busy) = match same_segment {
            Some(l) if gate::same(cells.diff(&l.cells), live.spec.gate) => (true, false),
            Some(_) if refilled_budget < 0.0 || running.is_some() => (false, true),
            _ if running.is_some() && last.is_some() => (false, true),
            _ => (false, false),
        };
        // Too old to go out within `lag_ms`: a watermarked frame to be marked
        // goes out only after its marks, about the last stage's time (at 2x
        // overload, checking its age alone let frames out 1,072 ms old).
        // Counted at most half the budget: a slow stage must not drop every
        // fresh frame and leave the stream without marks.
        let marking = live.spec.watermark && !skipped && !busy;
        let ahead = if marking { Duration::from_micros(live.stats.stage_us.load(Ordering::Relaxed)).min(live.spec.lag / 2) } else { Duration::ZERO };
        if arrived.elapsed() + ahead > live.spec.lag {
            live.stats.dropped.fetch_add(1, Ordering::Relaxed);
            live.count("dropped");
            continue;
        }
        (budget, refilled) = (refilled_budget, now);
        let (rgb, result): (Vec<Arc<Vec<u8>>>, Option<Arc<str>>) = if skipped || busy {
            let l = last.as_ref().expect("a last frame when skipping");
            let rgb = if live.spec.watermark { l.rgb.clone() } else { vec![pixels] };
            (rgb, Some(l.result.clone()))
        } else if live.spec.watermark {
            let started = Instant::now();
            let jpeg = jpeg_of(&pixels, shape).await?;
            let (result, marked) = tokio::join!(run_route(&shared, &live, jpeg.clone()), mark(&shared, &live, &jpeg, segment));
            let took = started.elapsed();
            budget -= took.as_secs_f64();
            record_stage(&live, &label, took);
            let rgb = marked.unwrap_or_else(|| vec![pixels; usize::from(variants)]);
            let result: Arc<str> = Arc::from(result.as_str());
            last = Some(Last { cells, rgb: rgb.clone(), segment, result: result.clone() });
            (rgb, Some(result))
        } else {
            let (shared, live2, frame) = (shared.clone(), live.clone(), pixels.clone());
            running = Some(tokio::spawn(async move {
                let started = Instant::now();
                let result = match jpeg_of(&frame, shape).await {
                    Ok(jpeg) => run_route(&shared, &live2, jpeg).await,
                    Err(e) => json!({"error": {"code": "internal", "message": e.to_string()}}).to_string(),
                };
                (result, started.elapsed())
            }));
            let previous = last.as_ref().map_or_else(|| Arc::from("null"), |l| l.result.clone());
            last = Some(Last { cells, rgb: vec![pixels.clone()], segment, result: previous });
            (vec![pixels], None)
        };
        if skipped {
            live.stats.skipped.fetch_add(1, Ordering::Relaxed);
            live.count("skipped");
        }
        if busy {
            live.stats.busy.fetch_add(1, Ordering::Relaxed);
            live.count("busy");
        }
        for (e, rgb) in encoders.iter().zip(rgb.iter()) {
            e.send(rgb.clone()).await?;
        }
        sent = rgb;
        let lag = arrived.elapsed();
        live.stats.lag_us.store(lag.as_micros() as u64, Ordering::Relaxed);
        crate::metrics::global().stream_lag.get_or_create(&label).set(lag.as_secs_f64());
        live.stats.frames_out.fetch_add(1, Ordering::Relaxed);
        live.count("out");
        let pending = Pending { index, time_s: round(index as f64 / f64::from(shape.fps)), skipped, busy, lag_ms: round(lag.as_secs_f64() * 1e3) };
        match result {
            Some(r) if running.is_none() => pending.send(&live, &r),
            _ => waiting.push(pending),
        }
        index += 1;
        // Behind the clock by more than a frame (a changed frame took longer
        // than a frame time, or frames were dropped): the last frame again
        // until the output is back on time, so that it keeps its rate and the
        // HLS timeline keeps up with the wall clock. Without this, a stream
        // fed twice what it can process put out half its rate, and each
        // one-second segment took two seconds to fill: 12 s behind after 20 s.
        // Marked frames are repeated only within their segment (they carry
        // its number); the next segment's first frame is marked afresh.
        let start = *clock.get_or_insert_with(Instant::now);
        let due = (start.elapsed().as_secs_f64() * f64::from(shape.fps)) as u64;
        while index + 1 < due && (!live.spec.watermark || index / u64::from(shape.fps) == segment) {
            fill(&live, &encoders, &sent).await?;
            index += 1;
        }
    }
}

/// A frame filled in: these pixels (one per variant) again, counted out and filled.
async fn fill(live: &Live, encoders: &[Feed], rgb: &[Arc<Vec<u8>>]) -> Result<(), StreamError> {
    for (e, rgb) in encoders.iter().zip(rgb.iter()) {
        e.send(rgb.clone()).await?;
    }
    live.stats.frames_out.fetch_add(1, Ordering::Relaxed);
    live.stats.filled.fetch_add(1, Ordering::Relaxed);
    live.count("out");
    live.count("filled");
    Ok(())
}

/// A frame's event, waiting for the result it carries.
struct Pending {
    index: u64,
    time_s: f64,
    skipped: bool,
    busy: bool,
    lag_ms: f64,
}

impl Pending {
    fn send(&self, live: &Live, result: &str) {
        let Pending { index, time_s, skipped, busy, lag_ms } = self;
        let data = format!("{{\"index\":{index},\"time_s\":{time_s},\"skipped\":{skipped},\"busy\":{busy},\"lag_ms\":{lag_ms},\"result\":{result}}}");
        let _ = live.events.send(sse_raw("frame", &data));
    }
}

fn record_stage(live: &Live, label: &StreamLabel, took: Duration) {
    live.stats.stage_us.store(took.as_micros() as u64, Ordering::Relaxed);
    crate::metrics::global().stream_stage.get_or_create(label).observe(took.as_secs_f64());
    live.stats.processed.fetch_add(1, Ordering::Relaxed);
}

/// Stops an encoder's feeding task with the frame loop.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A frame read from the ingest: its pixels (what the encoders get), what
/// the gate sees of it, when it came.
struct Frame {
    cells: Cells,
    rgb: Arc<Vec<u8>>,
    arrived: Instant,
}

/// A changed frame as the JPEG a route takes (near-lossless: it is what the
/// model and the watermark see), made off the async runtime.
async fn jpeg_of(rgb: &Arc<Vec<u8>>, shape: Shape) -> Result<Bytes, StreamError> {
    let rgb = rgb.clone();
    tokio::task::spawn_blocking(move || crate::imaging::encode_frame(shape.width, shape.height, &rgb, 92))
        .await
        .map_err(|e| StreamError::Ingest(format!("the encoding task failed: {e}")))?
        .map(Bytes::from)
        .map_err(|e| StreamError::Ingest(e.to_string()))
}

/// The frame through the stream's route: its JSON answer, or `{"error": ...}`.
async fn run_route(shared: &Shared, live: &Live, jpeg: Bytes) -> String {
    match answer(shared, &live.spec.route, live.spec.params.as_deref(), jpeg).await {
        Ok(Answer::Json(body)) => String::from_utf8_lossy(&body).trim().replace('\n', " "),
        Ok(_) => json!({"error": {"code": "not_json", "message": "the route answered with an image"}}).to_string(),
        Err(e) => json!({"error": respond::error_object(&e)}).to_string(),
    }
}

/// Both marked variants of a frame for `segment`, as RGB; `None` when
/// marking failed (the frame then goes out unmarked, never with a wrong mark).
async fn mark(shared: &Shared, live: &Live, jpeg: &Bytes, segment: u64) -> Option<Vec<Arc<Vec<u8>>>> {
    if !live.spec.watermark {
        return None;
    }
    let route = &live.spec.watermark_route;
    let (zero, one) = (format!("id={}", viewers::payload(segment, 0)), format!("id={}", viewers::payload(segment, 1)));
    let (a, b) = tokio::join!(answer(shared, route, Some(&zero), jpeg.clone()), answer(shared, route, Some(&one), jpeg.clone()));
    let mut out = Vec::new();
    for marked in [a, b] {
        match marked {
            Ok(Answer::Media { bytes, .. }) => {
                let img = tokio::task::spawn_blocking(move || crate::imaging::decode_frame(&bytes, 1)).await.ok()?.ok()?;
                if (img.width, img.height) != (live.spec.shape.width, live.spec.shape.height) {
                    return None;
                }
                out.push(Arc::new(img.rgb));
            }
            Ok(_) => {
                tracing::warn!(stream = %live.id, route, "the watermark route answered JSON, not an image");
                return None;
            }
            Err(e) => {
                tracing::debug!(stream = %live.id, "a frame went out unmarked: {e}");
                return None;
            }
        }
    }
    Some(out)
}

/// One frame through a route of the snapshot being served now (a reload
/// between frames is picked up), as a client's upload would go.
pub(super) async fn answer(shared: &Shared, path: &str, params: Option<&str>, jpeg: Bytes) -> Result<Answer, ServeError> {
    let snapshot = shared.snapshot.load_full();
    let index = snapshot
        .routes
        .iter()
        .position(|r| r.path == path && r.method == "POST" && r.branches.is_empty())
        .ok_or_else(|| ServeError::BadRequest { code: "bad_route", message: format!("route {path} is not served now") })?;
    let overrides: Overrides = snapshot.routes[index].chain.overrides(params).map_err(|message| ServeError::BadRequest { code: "bad_param", message })?;
    let ask = Ask { input: Input::One(Blob { content_type: "image/jpeg".into(), bytes: jpeg }), overrides, render: None, budget: None, pass: Passthrough::default(), cache: Caching::Bypass };
    route::answer(shared, snapshot, index, ask, Instant::now(), shared.request_id()).await.0
}

pub fn sse(name: &str, data: &Value) -> Bytes {
    sse_raw(name, &data.to_string())
}

fn sse_raw(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
