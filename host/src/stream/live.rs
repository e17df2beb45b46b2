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
use crate::route::{self, Ask, Input, Passthrough};
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
    latest: Mutex<Option<(Bytes, Instant)>>,
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
            latest: Mutex::new(None),
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

    /// Hands a frame to the loop; one that was waiting is replaced (dropped).
    fn put(&self, jpeg: Bytes) {
        let replaced = self.latest.lock().expect("latest frame").replace((jpeg, Instant::now())).is_some();
        if replaced {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.count("dropped");
        }
        self.arrived.notify_one();
    }

    async fn take(&self, within: Duration) -> Option<(Bytes, Instant)> {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Some(f) = self.latest.lock().expect("latest frame").take() {
                return Some(f);
            }
            if tokio::time::timeout_at(until, self.arrived.notified()).await.is_err() {
                return self.latest.lock().expect("latest frame").take();
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
        let ended = loop {
            // Before the first frame a pushed stream waits for its publisher
            // as long as it takes; a pulled one, and any stream once live,
            // is restarted after `stall` without a frame.
            let wait = if seen || !matches!(live.spec.source, Source::Push { .. }) { live.spec.stall } else { Duration::from_secs(86_400) };
            match tokio::time::timeout(wait, ingest.next()).await {
                Ok(Ok(Some(jpeg))) => {
                    if !seen {
                        seen = true;
                        live.set_state("live");
                    }
                    live.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    live.count("in");
                    live.put(jpeg);
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
    loop {
        // Two frame times without input: the publisher stalls; the output
        // keeps its rate with the last frame, once a frame time, until input comes back.
        let Some((jpeg, arrived)) = live.take(if stalled { interval } else { interval * 2 }).await else {
            stalled = true;
            if let Some(l) = &last {
                for (e, rgb) in encoders.iter().zip(l.rgb.iter()) {
                    e.send(rgb.clone()).await?;
                }
                index += 1;
                live.stats.frames_out.fetch_add(1, Ordering::Relaxed);
                live.stats.filled.fetch_add(1, Ordering::Relaxed);
                live.count("out");
                live.count("filled");
            }
            continue;
        };
        stalled = false;
        let age = arrived.elapsed();
        if age > live.spec.lag {
            live.stats.dropped.fetch_add(1, Ordering::Relaxed);
            live.count("dropped");
            continue;
        }
        let now = Instant::now();
        budget = (budget + now.duration_since(refilled).as_secs_f64() * live.spec.cpu).min(live.spec.cpu);
        refilled = now;
        let segment = index / u64::from(shape.fps);
        let frame = decide(&live, &jpeg, last.as_ref(), segment).await?;
        let (skipped, busy) = match (&frame.cells, &last) {
            (None, Some(_)) => (true, false),
            _ if budget < 0.0 && last.as_ref().is_some_and(|l| l.segment == segment) => (false, true),
            _ => (false, false),
        };
        let (rgb, result) = if skipped || busy {
            let l = last.as_mut().expect("a last frame when skipping");
            let rgb = if live.spec.watermark { l.rgb.clone() } else { vec![frame.rgb.clone().expect("decoded")] };
            (rgb, l.result.clone())
        } else {
            let started = Instant::now();
            let (result, marked) = tokio::join!(run_route(&shared, &live, jpeg.clone()), mark(&shared, &live, &jpeg, segment));
            let took = started.elapsed();
            budget -= took.as_secs_f64();
            live.stats.stage_us.store(took.as_micros() as u64, Ordering::Relaxed);
            crate::metrics::global().stream_stage.get_or_create(&label).observe(took.as_secs_f64());
            live.stats.processed.fetch_add(1, Ordering::Relaxed);
            let rgb = match marked {
                Some(m) => m,
                None => vec![frame.rgb.clone().expect("decoded"); usize::from(variants)],
            };
            let result: Arc<str> = Arc::from(result.as_str());
            let cells = frame.cells.clone().or_else(|| last.as_ref().map(|l| l.cells.clone())).expect("cells of a changed frame");
            last = Some(Last { cells, rgb: rgb.clone(), segment, result: result.clone() });
            (rgb, result)
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
        let lag = arrived.elapsed();
        live.stats.lag_us.store(lag.as_micros() as u64, Ordering::Relaxed);
        crate::metrics::global().stream_lag.get_or_create(&label).set(lag.as_secs_f64());
        live.stats.frames_out.fetch_add(1, Ordering::Relaxed);
        live.count("out");
        let data = format!(
            "{{\"index\":{index},\"time_s\":{},\"skipped\":{skipped},\"busy\":{busy},\"lag_ms\":{},\"result\":{result}}}",
            round(index as f64 / f64::from(shape.fps)),
            round(lag.as_secs_f64() * 1e3)
        );
        let _ = live.events.send(sse_raw("frame", &data));
        index += 1;
    }
}

/// Stops an encoder's feeding task with the frame loop.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the gate and the decoder made of a frame.
struct Decided {
    /// `None`: the gate found it the same as the last changed frame.
    cells: Option<Cells>,
    /// The frame's pixels, when they are needed: without watermarks every
    /// frame goes out as it came; with them, only changed frames are marked.
    rgb: Option<Arc<Vec<u8>>>,
}

/// Runs the gate (and the full decode, when needed) off the async runtime.
async fn decide(live: &Arc<Live>, jpeg: &Bytes, last: Option<&Last>, segment: u64) -> Result<Decided, StreamError> {
    let (jpeg, gate, watermark) = (jpeg.clone(), live.spec.gate, live.spec.watermark);
    // A new segment must be marked anew (its frames carry their segment's
    // number): the gate never skips the first frame of a segment, which
    // also makes a fresh frame at least once a second.
    let previous = last.filter(|l| l.segment == segment).map(|l| l.cells.clone());
    let shape = live.spec.shape;
    tokio::task::spawn_blocking(move || {
        let cells = Cells::of_jpeg(&jpeg).map_err(|e| StreamError::Ingest(format!("a frame does not decode: {e}")))?;
        let same = previous.as_ref().is_some_and(|p| gate::same(cells.diff(p), gate));
        let needs_pixels = !same || !watermark;
        let rgb = if needs_pixels {
            let img = crate::imaging::decode_frame(&jpeg, 1).map_err(|e| StreamError::Ingest(format!("a frame does not decode: {e}")))?;
            if (img.width, img.height) != (shape.width, shape.height) {
                return Err(StreamError::Ingest(format!("a frame is {}x{}, not {}x{}", img.width, img.height, shape.width, shape.height)));
            }
            Some(Arc::new(img.rgb))
        } else {
            None
        };
        Ok(Decided { cells: (!same).then_some(cells), rgb })
    })
    .await
    .map_err(|e| StreamError::Ingest(format!("the gate's task failed: {e}")))?
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
    let ask = Ask { input: Input::One(Blob { content_type: "image/jpeg".into(), bytes: jpeg }), overrides, render: None, budget: None, pass: Passthrough::default(), fresh: false };
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
