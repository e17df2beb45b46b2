//! Live streams (seed 004): a stream pushed to osprey over RTMP, or pulled
//! from an allowed URL, runs frame by frame through a route; frames nearly
//! the same as the last one processed reuse its result; each viewer gets the
//! stream as HLS with their ID hidden in what they watch; who watched is
//! written to the audit log.
//!
//! - `ingest`: ffmpeg in (RTMP listener or pull), JPEG frames on a pipe.
//! - `gate`: the similar-frame gate.
//! - `live`: one stream's tasks: ingest supervisor, frame loop, counters.
//! - `egress`: ffmpeg out: x264 into one-second HLS segments, per variant.
//! - `viewers`: viewer tokens, the A/B variant scheme, tracing a clip's ID.
//! - `trace`: a recorded clip in, the viewer ID out.
//!
//! Endpoints (`[streams]` in the config turns them on; all but the viewing
//! ones need the admin token): `POST /v1/streams` (201), `GET /v1/streams`,
//! `GET|DELETE /v1/streams/{id}`, `POST /v1/streams/{id}/viewers`,
//! `GET /v1/streams/{id}/index.m3u8`, `GET /v1/streams/{id}/{n}.ts`,
//! `GET /v1/streams/{id}/events` (SSE), `POST /v1/streams/trace`.

mod egress;
pub mod gate;
mod ingest;
mod live;
mod trace;
pub mod viewers;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::audit::{Audit, Visit};
pub use crate::http::StreamError;
use crate::config::{GateThresholds, StreamSettings};
use crate::http::respond::{self, full, Body};
use crate::http::ServeError;
use crate::snapshot::Snapshot;
use crate::state::Shared;
use ingest::Shape;
use live::{Live, Spec};

/// The route a stream runs when the request names none.
const DEFAULT_ROUTE: &str = "/v1/detect/fast";
/// The route a trace checks each frame of a clip with.
const CHECK_ROUTE: &str = "/v1/stego/check";
/// A stream's creation request is small JSON.
const MAX_REQUEST: usize = 64 << 10;
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Where a stream's frames come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// osprey listens on `bind:port` for one RTMP publisher with this key.
    Push { bind: IpAddr, port: u16, key: String },
    /// osprey reads this URL (its host is on the allow-list).
    Pull { url: url::Url },
}

/// What a request under `/v1/streams` asks for.
pub enum Op {
    Create,
    List,
    Trace,
    Status(String),
    Stop(String),
    Viewer(String),
    Events(String),
    Playlist(String),
    Segment(String, u64),
}

/// The streams endpoint of a method and path: `None` when the path is not
/// one; `Err` with the methods allowed when only the method is wrong.
pub fn find(method: &str, path: &str) -> Option<Result<Op, Vec<String>>> {
    let rest = path.strip_prefix("/v1/streams")?;
    let only = |m: &str, op: Op| if method == m || (m == "GET" && method == "HEAD") { Ok(op) } else { Err(vec![m.to_string()]) };
    if rest.is_empty() {
        return Some(match method {
            "POST" => Ok(Op::Create),
            "GET" | "HEAD" => Ok(Op::List),
            _ => Err(vec!["GET".into(), "POST".into()]),
        });
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "trace" {
        return Some(only("POST", Op::Trace));
    }
    let (id, tail) = rest.split_once('/').map_or((rest, None), |(id, tail)| (id, Some(tail)));
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = id.to_string();
    Some(match tail {
        None => match method {
            "GET" | "HEAD" => Ok(Op::Status(id)),
            "DELETE" => Ok(Op::Stop(id)),
            _ => Err(vec!["GET".into(), "DELETE".into()]),
        },
        Some("viewers") => only("POST", Op::Viewer(id)),
        Some("events") => only("GET", Op::Events(id)),
        Some("index.m3u8") => only("GET", Op::Playlist(id)),
        Some(seg) => {
            let n = seg.strip_suffix(".ts")?.parse().ok()?;
            only("GET", Op::Segment(id, n))
        }
    })
}

/// The streams of this server.
pub struct Streams {
    table: Mutex<HashMap<String, Running>>,
    signer: viewers::Signer,
    /// Opened at first use (a stream, or `GET /admin/audit`); the file is `[streams] audit` of that time.
    audit: tokio::sync::OnceCell<Result<Arc<Audit>, String>>,
}

struct Running {
    live: Arc<Live>,
    publish: Option<String>,
    port: Option<u16>,
    tasks: Vec<tokio::task::AbortHandle>,
    /// The stream's HLS folder, removed with it.
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        crate::metrics::global().streams.dec();
    }
}

impl Default for Streams {
    fn default() -> Self {
        Streams { table: Mutex::new(HashMap::new()), signer: viewers::Signer::random(), audit: tokio::sync::OnceCell::new() }
    }
}

impl Streams {
    fn get(&self, id: &str) -> Result<Arc<Live>, StreamError> {
        self.table.lock().expect("streams").get(id).map(|r| r.live.clone()).ok_or_else(|| StreamError::Unknown(id.to_string()))
    }

    pub async fn audit(&self, settings: &StreamSettings) -> Result<Arc<Audit>, StreamError> {
        let (path, keep) = (settings.audit.clone(), settings.audit_keep);
        let opened = self
            .audit
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || Audit::open(&path, keep).map(Arc::new).map_err(|e| e.to_string()))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            })
            .await;
        opened.clone().map_err(StreamError::Unavailable)
    }

    /// Streams running now.
    pub fn running(&self) -> usize {
        self.table.lock().expect("streams").len()
    }
}

/// One request under `/v1/streams`.
pub async fn handle(shared: &Arc<Shared>, streams: &Streams, snapshot: Arc<Snapshot>, op: Op, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, ServeError> {
    let settings = snapshot.config.streams.clone().ok_or(StreamError::Off)?;
    let admin = || match &snapshot.config.admin.token {
        None => Err(ServeError::from(StreamError::NoToken)),
        token => crate::http::auth::bearer(token, req.headers()),
    };
    match op {
        Op::Create => {
            admin()?;
            create(shared, streams, &snapshot, &settings, req).await
        }
        Op::List => {
            admin()?;
            let list: Vec<Value> = streams.table.lock().expect("streams").values().map(|r| r.live.status()).collect();
            Ok(respond::json_response(StatusCode::OK, &json!({"streams": list})))
        }
        Op::Status(id) => {
            admin()?;
            let table = streams.table.lock().expect("streams");
            let r = table.get(&id).ok_or(StreamError::Unknown(id.clone()))?;
            let mut status = r.live.status();
            status["publish"] = json!(r.publish);
            Ok(respond::json_response(StatusCode::OK, &status))
        }
        Op::Stop(id) => {
            admin()?;
            let running = streams.table.lock().expect("streams").remove(&id).ok_or(StreamError::Unknown(id.clone()))?;
            running.live.state.lock().map(|mut s| *s = "ended").ok();
            let _ = running.live.events.send(live::sse("state", &json!({"state": "ended"})));
            tracing::info!(stream = %id, "stream stopped by DELETE");
            drop(running);
            Ok(respond::no_content())
        }
        Op::Viewer(id) => {
            admin()?;
            streams.get(&id)?;
            let body = read_json(req).await?;
            let max = (1u64 << settings.viewer_id_bits) - 1;
            let viewer = body.get("id").and_then(Value::as_u64).filter(|v| *v <= max).ok_or_else(|| {
                StreamError::BadRequest(format!("give {{\"id\": N}} with N from 0 to {max} ([streams] viewer_id_bits = {})", settings.viewer_id_bits))
            })? as u32;
            let token = streams.signer.token(&id, viewer);
            let hls = format!("/v1/streams/{id}/index.m3u8?viewer={token}");
            Ok(respond::json_response(StatusCode::CREATED, &json!({"viewer": viewer, "token": token, "hls": hls})))
        }
        Op::Events(id) => Ok(events(streams.get(&id)?)),
        Op::Playlist(id) => playlist(streams, &settings, &id, &req, peer).await,
        Op::Segment(id, n) => segment(streams, &id, n, &req).await,
        Op::Trace => {
            admin()?;
            trace::handle(shared, &settings, req).await
        }
    }
}

/// `POST /v1/streams` as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    /// `"push"`, or the URL to pull (`rtmp://`, `rtsp://`, `http(s)://`).
    source: String,
    route: Option<String>,
    /// The route's parameters, as a query string would give them (`{"conf": 0.3}`).
    #[serde(default)]
    params: serde_json::Map<String, Value>,
    /// `false` turns the gate off; `{"mean": .., "cell": ..}` sets its thresholds.
    gate: Option<Value>,
    #[serde(default)]
    watermark: bool,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<u32>,
}

async fn create(shared: &Arc<Shared>, streams: &Streams, snapshot: &Snapshot, settings: &StreamSettings, req: Request<Incoming>) -> Result<Response<Body>, ServeError> {
    let host_header = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string);
    let body = read_json(req).await?;
    let ask: CreateRequest = serde_json::from_value(body).map_err(|e| StreamError::BadRequest(format!("the stream request: {e}")))?;
    let route = ask.route.clone().unwrap_or_else(|| DEFAULT_ROUTE.to_string());
    let Some(index) = snapshot.routes.iter().position(|r| r.path == route && r.method == "POST" && r.branches.is_empty()) else {
        return Err(StreamError::BadRequest(format!("route '{route}' is not a POST route of one image")).into());
    };
    let params = query_of(&ask.params)?;
    snapshot.routes[index].chain.overrides(params.as_deref()).map_err(StreamError::BadRequest)?;
    let gate = match &ask.gate {
        None | Some(Value::Bool(true)) => settings.gate,
        Some(Value::Bool(false)) => GateThresholds { mean: 0.0, cell: 0.0 },
        Some(v) => {
            let num = |k: &str, d: f64| v.get(k).map_or(Some(d), Value::as_f64).filter(|x| (0.0..=255.0).contains(x));
            match (num("mean", settings.gate.mean), num("cell", settings.gate.cell)) {
                (Some(mean), Some(cell)) => GateThresholds { mean, cell },
                _ => return Err(StreamError::BadRequest("gate: false, or {\"mean\": levels, \"cell\": levels} within 0-255".into()).into()),
            }
        }
    };
    let within = |v: Option<u32>, max: u32, what: &str| match v {
        None => Ok(max),
        Some(n) if (2..=max).contains(&n) => Ok(n),
        Some(n) => Err(StreamError::BadRequest(format!("{what} = {n}: this server takes 2 to {max} ([streams] max_{what})"))),
    };
    let shape = Shape { width: within(ask.width, settings.max_width, "width")? & !1, height: within(ask.height, settings.max_height, "height")? & !1, fps: within(ask.fps, settings.max_fps, "fps")? };
    // Opened now, so a stream never runs without its audit log.
    streams.audit(settings).await?;
    let id = crate::state::random_id();
    let (publish, port) = start(shared, streams, snapshot, settings, &ask, &id, route.clone(), params, gate, shape, host_header)?;
    // The publish URL must work when the client reads it: a publisher that
    // connects at once (ffmpeg does not retry, OBS does) would find no listener.
    if let Some(port) = port {
        listening(port).await;
    }
    Ok(answer(&ask, streams, &id, &route, shape, publish))
}

/// Takes a place among `max_streams` (and a port, for a push) and starts the
/// stream's tasks; the table's lock covers the count and the port, so two
/// requests cannot take the last place twice.
#[allow(clippy::too_many_arguments)]
fn start(
    shared: &Arc<Shared>,
    streams: &Streams,
    snapshot: &Snapshot,
    settings: &StreamSettings,
    ask: &CreateRequest,
    id: &str,
    route: String,
    params: Option<String>,
    gate: GateThresholds,
    shape: Shape,
    host_header: Option<String>,
) -> Result<(Option<String>, Option<u16>), StreamError> {
    let mut table = streams.table.lock().expect("streams");
    if table.len() >= settings.max_streams {
        return Err(StreamError::Busy { running: table.len() });
    }
    let bind = snapshot.config.server.listen.ip();
    let (source, publish, port) = if ask.source == "push" {
        let used: Vec<u16> = table.values().filter_map(|r| r.port).collect();
        let port = (settings.ports.0..=settings.ports.1)
            .find(|p| !used.contains(p) && std::net::TcpListener::bind((bind, *p)).is_ok())
            .ok_or(StreamError::NoPort { first: settings.ports.0, last: settings.ports.1 })?;
        let key = crate::state::random_id();
        let host = settings.public_host.clone().or_else(|| (!bind.is_unspecified()).then(|| bind.to_string())).or_else(|| host_header.map(|h| h.rsplit_once(':').map_or(h.clone(), |(h, _)| h.to_string()))).unwrap_or_else(|| "127.0.0.1".into());
        let publish = format!("rtmp://{host}:{port}/live/{key}");
        (Source::Push { bind, port, key }, Some(publish), Some(port))
    } else {
        (Source::Pull { url: allowed(&ask.source, &settings.allow)? }, None, None)
    };
    let dir = tempfile::Builder::new().prefix("osprey-stream-").tempdir().map_err(|e| StreamError::Unavailable(format!("a folder for the stream's segments: {e}")))?;
    let spec = Spec {
        source,
        route,
        params,
        gate,
        watermark: ask.watermark,
        shape,
        bits: settings.viewer_id_bits,
        cpu: settings.cpu,
        lag: settings.lag,
        stall: settings.stall,
        watermark_route: settings.watermark_route.clone(),
    };
    let live = Arc::new(Live::new(id.to_string(), spec, dir.path().to_path_buf()));
    let supervisor = tokio::spawn(live::supervise(live.clone()));
    let (shared2, live2) = (shared.clone(), live.clone());
    let frames = tokio::spawn(async move {
        if let Err(e) = live::frames(live2.clone(), shared2).await {
            tracing::error!(stream = %live2.id, "the stream's frame loop stopped: {e}");
            live2.state.lock().map(|mut s| *s = "failed").ok();
        }
    });
    crate::metrics::global().streams.inc();
    table.insert(id.to_string(), Running { live, publish: publish.clone(), port, tasks: vec![supervisor.abort_handle(), frames.abort_handle()], _dir: dir });
    Ok((publish, port))
}

/// What `create` answers once the stream runs.
fn answer(ask: &CreateRequest, streams: &Streams, id: &str, route: &str, shape: Shape, publish: Option<String>) -> Response<Body> {
    tracing::info!(stream = %id, route = %route, source = %if publish.is_some() { "push" } else { &ask.source }, width = shape.width, height = shape.height, fps = shape.fps, watermark = ask.watermark, "stream created");
    let mut answer = json!({
        "id": id, "route": route, "width": shape.width, "height": shape.height, "fps": shape.fps, "watermark": ask.watermark,
        "events": format!("/v1/streams/{id}/events"), "hls": format!("/v1/streams/{id}/index.m3u8"),
    });
    if let Some(p) = publish {
        answer["publish"] = json!(p);
    }
    if ask.watermark {
        // The creator watches as viewer 0; others get their own tokens from /viewers.
        answer["hls"] = json!(format!("/v1/streams/{id}/index.m3u8?viewer={}", streams.signer.token(id, 0)));
        answer["viewers"] = json!(format!("/v1/streams/{id}/viewers"));
    }
    respond::json_response(StatusCode::CREATED, &answer)
}

/// A pulled URL, if its scheme is a stream's and its host is on the allow-list.
fn allowed(source: &str, allow: &[String]) -> Result<url::Url, StreamError> {
    let url = url::Url::parse(source).map_err(|e| StreamError::BadRequest(format!("source \"{source}\": {e} (\"push\", or an rtmp://, rtsp:// or http(s):// URL)")))?;
    if !matches!(url.scheme(), "rtmp" | "rtsp" | "http" | "https") {
        return Err(StreamError::BadRequest(format!("source scheme '{}' is not one of rtmp, rtsp, http, https", url.scheme())));
    }
    let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if allow.iter().any(|a| a.trim_start_matches('[').trim_end_matches(']') == host) {
        Ok(url)
    } else {
        Err(StreamError::NotAllowed(host))
    }
}

/// The route's parameters as the query string `Chain::overrides` reads.
fn query_of(params: &serde_json::Map<String, Value>) -> Result<Option<String>, StreamError> {
    if params.is_empty() {
        return Ok(None);
    }
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        let v = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return Err(StreamError::BadRequest(format!("params.{k} must be a number"))),
        };
        q.append_pair(k, &v);
    }
    Ok(Some(q.finish()))
}

async fn read_json(req: Request<Incoming>) -> Result<Value, StreamError> {
    let body = Limited::new(req.into_body(), MAX_REQUEST).collect().await.map_err(|e| StreamError::BadRequest(format!("the request body: {e} (at most {MAX_REQUEST} bytes of JSON)")))?.to_bytes();
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&body).map_err(|e| StreamError::BadRequest(format!("the request body is not JSON: {e}")))
}

/// The viewer a request names (`?viewer=TOKEN`), checked against the stream.
fn viewer_of(streams: &Streams, id: &str, req: &Request<Incoming>) -> Result<Option<(u32, String)>, StreamError> {
    let token = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).find(|(k, _)| k == "viewer").map(|(_, v)| v.into_owned());
    match token {
        None => Ok(None),
        Some(t) => streams.signer.verify(id, &t).map(|v| Some((v, t))).ok_or(StreamError::ViewerRequired),
    }
}

async fn playlist(streams: &Streams, settings: &StreamSettings, id: &str, req: &Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, ServeError> {
    let live = streams.get(id)?;
    let viewer = viewer_of(streams, id, req)?;
    if live.spec.watermark && viewer.is_none() {
        return Err(StreamError::ViewerRequired.into());
    }
    let v0 = match tokio::fs::read_to_string(live.dir.join("v0.m3u8")).await {
        Ok(text) => text,
        // No segment yet (no publisher, or the first second): an empty live playlist.
        Err(_) => "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n".to_string(),
    };
    let dir = live.dir.clone();
    let ready = |n: u64| !live.spec.watermark || dir.join(format!("v1_{n}.ts")).exists();
    let text = viewers::playlist(&v0, ready, viewer.as_ref().map(|(_, t)| t.as_str()));
    if let Some((v, _)) = viewer {
        if let Ok(audit) = streams.audit(settings).await {
            let minute = crate::audit::minute_of(std::time::SystemTime::now());
            audit.record(Visit { viewer: v, ip: peer.ip().to_string(), minute, stream: id.to_string(), route: live.spec.route.clone() });
        }
    }
    let mut resp = Response::new(full(text));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

async fn segment(streams: &Streams, id: &str, n: u64, req: &Request<Incoming>) -> Result<Response<Body>, ServeError> {
    let live = streams.get(id)?;
    let viewer = viewer_of(streams, id, req)?;
    let variant = match (live.spec.watermark, viewer) {
        (false, _) => 0,
        (true, Some((v, _))) => viewers::variant(v, n, live.spec.bits),
        (true, None) => return Err(StreamError::ViewerRequired.into()),
    };
    let bytes = tokio::fs::read(live.dir.join(format!("v{variant}_{n}.ts"))).await.map_err(|_| StreamError::NoSegment(n))?;
    let mut resp = Response::new(full(Bytes::from(bytes)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
    // A segment never changes once written; a viewer's own URL is theirs alone.
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("private, max-age=60"));
    Ok(resp)
}

/// `GET /v1/streams/{id}/events`: the stream's events from now on (frames,
/// state changes, a `stats` event every second); a comment every few
/// seconds keeps proxies from closing a quiet stream.
fn events(live: Arc<Live>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut events = live.events.subscribe();
    tokio::spawn(async move {
        let first = live::sse("stats", &live.status());
        if tx.send(first).await.is_err() {
            return;
        }
        let mut stats = tokio::time::interval(Duration::from_secs(1));
        let mut quiet = tokio::time::interval(KEEP_ALIVE);
        loop {
            let next = tokio::select! {
                e = events.recv() => match e {
                    Ok(e) => e,
                    // A slow client misses frames rather than holding the stream back.
                    Err(RecvError::Lagged(n)) => Bytes::from(format!(": {n} events missed\n\n")),
                    Err(RecvError::Closed) => return,
                },
                _ = stats.tick() => live::sse("stats", &live.status()),
                _ = quiet.tick() => Bytes::from_static(b": keep-alive\n\n"),
                () = tx.closed() => return,
            };
            if tx.send(next).await.is_err() {
                return;
            }
            if live.state() == "ended" {
                return;
            }
        }
    });
    respond::event_stream(respond::channel(rx))
}

/// An `ffmpeg` command whose process dies with this server: a stream's
/// ffmpegs hold RTMP ports, and a server killed by SIGKILL (no destructor
/// runs) left them listening, so a restarted server found its ports taken.
fn ffmpeg() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ffmpeg");
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Waits (at most 5 s) until a socket listens on `port`, as the kernel's
/// table says: a probe connection would take ffmpeg's only accept (`-listen 1`).
async fn listening(port: u16) {
    let hex = format!(":{port:04X} ");
    for _ in 0..250 {
        let up = tokio::task::spawn_blocking({
            let hex = hex.clone();
            move || {
                ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
                    std::fs::read_to_string(f).is_ok_and(|t| t.lines().skip(1).any(|l| {
                        let cols: Vec<&str> = l.split_whitespace().collect();
                        cols.len() > 3 && format!("{} ", &cols[1][cols[1].len() - 5..]) == hex && cols[3] == "0A"
                    }))
                })
            }
        })
        .await
        .unwrap_or(false);
        if up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(port, "the stream's RTMP listener is not up after 5 s");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_endpoints() {
        assert!(matches!(find("POST", "/v1/streams"), Some(Ok(Op::Create))));
        assert!(matches!(find("GET", "/v1/streams"), Some(Ok(Op::List))));
        assert!(matches!(find("POST", "/v1/streams/trace"), Some(Ok(Op::Trace))));
        assert!(matches!(find("GET", "/v1/streams/ab12"), Some(Ok(Op::Status(id))) if id == "ab12"));
        assert!(matches!(find("DELETE", "/v1/streams/ab12"), Some(Ok(Op::Stop(_)))));
        assert!(matches!(find("GET", "/v1/streams/ab12/index.m3u8"), Some(Ok(Op::Playlist(_)))));
        assert!(matches!(find("GET", "/v1/streams/ab12/17.ts"), Some(Ok(Op::Segment(_, 17)))));
        assert!(matches!(find("GET", "/v1/streams/ab12/events"), Some(Ok(Op::Events(_)))));
        assert!(matches!(find("POST", "/v1/streams/ab12/viewers"), Some(Ok(Op::Viewer(_)))));
        assert!(matches!(find("PUT", "/v1/streams/ab12"), Some(Err(_))));
        assert!(find("GET", "/v1/streams/ab12/../x").is_none());
        assert!(find("GET", "/v1/streams/zz").is_none());
        assert!(find("GET", "/v1/streamsx").is_none());
    }

    #[test]
    fn pulls_only_from_allowed_hosts_and_stream_schemes() {
        let allow = vec!["camera.example.com".to_string(), "10.0.0.7".to_string()];
        assert!(allowed("rtsp://camera.example.com/live", &allow).is_ok());
        assert!(allowed("rtmp://10.0.0.7:1935/app/key", &allow).is_ok());
        assert!(matches!(allowed("http://169.254.169.254/latest", &allow), Err(StreamError::NotAllowed(_))));
        assert!(matches!(allowed("http://camera.example.com.evil.net/x", &allow), Err(StreamError::NotAllowed(_))));
        assert!(matches!(allowed("file:///etc/passwd", &allow), Err(StreamError::BadRequest(_))));
        assert!(matches!(allowed("not a url", &allow), Err(StreamError::BadRequest(_))));
    }
}
