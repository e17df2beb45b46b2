//! Soak: a real `osprey serve` on the default config for `OSPREY_SOAK_SECS`
//! (default 1800) over loopback, on a mix of everything it serves at once:
//! every image route (YOLO, SSD, classification, two-camera fusion,
//! watermark embed and check), Open Inference Protocol requests in the
//! binary extension, video jobs followed to their end, and a reload through
//! the admin API every minute.
//!
//! The load is a multiple (`OSPREY_SOAK_LOAD`, default 2) of what this
//! machine serves of that mix, measured first: for
//! `OSPREY_SOAK_CAPACITY_SECS` (default 60, after 10 s to warm up) a closed
//! loop of more connections than the server lets run or wait sends each
//! kind again as soon as it is answered (after `Retry-After` when refused,
//! as a polite client would), and what each kind got served per second is
//! its capacity. The soak then offers each kind that many times its
//! capacity, open loop (a new request every 1/rate seconds whatever the
//! answers), so the server must refuse about half of what it is offered.
//!
//! Passes when every answer of the soak is a 2xx, a 429, or a 503 with
//! `Retry-After` (no 5xx of another kind, no transport error, no video job
//! failed), and RSS, open files and threads are flat from the end of its
//! first minute to the end (files and threads within a stated slack: the
//! pools grow and shrink with the load). RSS is judged less what the result
//! cache holds (`osprey_cache_bytes`, printed beside it), within 10 %: with
//! distinct bodies every answer is new, so the cache fills for its first TTL
//! (10 minutes by default) by design and is then held there by its expiry
//! sweep.
//!
//! Run by hand (not in CI): `make soak`, or
//! `OSPREY_SOAK_SECS=600 cargo bench -p osprey-tests --bench soak`.
//! Bodies are distinct so the result cache cannot absorb the load.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osprey_tests::process::{Osprey, ANY_PORT};

const TOKEN: &str = "soak-admin-token-0123456789abcdef";

/// What one kind of request got: answers by status (0: no answer at all),
/// 503s without `Retry-After`, and the latencies of its 2xx.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    bare_503: u64,
    ok_ms: Vec<f64>,
    /// The first answers of another kind, to print.
    odd: Vec<String>,
}

/// A status the soak accepts: a 2xx, a 429, or a 503 (which must also carry
/// `Retry-After`, counted apart in `bare_503`).
fn expected(status: u16) -> bool {
    (200..300).contains(&status) || status == 429 || status == 503
}

impl Tally {
    /// Answers of another kind than a 2xx, a 429 or a 503 with `Retry-After`.
    fn other(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| !expected(**s)).map(|(_, n)| n).sum::<u64>() + self.bare_503
    }
}

type Tallies = Arc<Mutex<BTreeMap<&'static str, Tally>>>;

/// A request a connection sends over and over; the serial makes each body distinct.
#[derive(Clone)]
enum Ask {
    /// An image route: raw body of this content type.
    Image { path: &'static str, content_type: &'static str, photo: Arc<Vec<u8>> },
    /// A two-field form (`visible`, `infrared`).
    Fuse { path: &'static str, photo: Arc<Vec<u8>> },
    /// OIP binary extension: the JSON header, then the tensor's bytes.
    Oip { header: Arc<String>, tensor: usize },
    /// A video job, its events read to the end.
    Video { mp4: Arc<Vec<u8>> },
}

/// Connections per kind of request while the capacity is measured, 42 in
/// all: with `max_inflight` 4 and `max_waiting` 64 on 2 cores, the model
/// routes are refused part of what they are sent, so what they get served is
/// what the server can serve of them beside the rest.
const MIX: &[(&str, usize)] = &[
    ("/v1/detect", 8),
    ("/v1/detect/fast", 8),
    ("/v1/classify", 8),
    ("/v1/fuse", 4),
    ("/v1/stego/embed", 3),
    ("/v1/stego/check", 3),
    ("/v2 infer", 6),
    ("/v1/videos", 2),
];

/// Requests of one kind the soak's client keeps open at once, at most: a
/// bound on the client's memory should the server stop answering. An
/// arrival past it is not sent and is counted as such ("not sent").
const OUTSTANDING: usize = 256;

/// Fewer answers than this in the capacity's window say little of a rate.
const FEW: u64 = 10;

/// The least rate a kind is offered, per second: a kind served nothing
/// while the capacity was measured is still sent now and then.
const LEAST_RATE: f64 = 0.1;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks harness=false benches for a list.
    }
    let env = |name: &str, default: f64| std::env::var(name).ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(default);
    let secs = env("OSPREY_SOAK_SECS", 1800.0) as u64;
    let load = env("OSPREY_SOAK_LOAD", 2.0);
    let measure_secs = env("OSPREY_SOAK_CAPACITY_SECS", 60.0) as u64;
    let repo = osprey_tests::repo();
    let server = Osprey::start_env(&repo.join("config/osprey.toml"), ANY_PORT, &[("OSPREY_ADMIN_TOKEN", TOKEN)]);
    let base = format!("http://{}", server.addr);
    let (dog, chelsea) = (Arc::new(osprey_tests::image("dog.jpg")), Arc::new(osprey_tests::image("chelsea.png")));
    let mp4 = Arc::new(std::fs::read(small_mp4()).unwrap());
    let oip_input: serde_json::Value = reqwest::blocking::get(format!("{base}/v2/models/efficientnet_lite3")).unwrap().json().unwrap();
    let input = &oip_input["inputs"][0];
    let shape: Vec<usize> = input["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap().max(1) as usize).collect();
    let tensor = shape.iter().product::<usize>();
    let header = serde_json::json!({"inputs": [{"name": input["name"], "shape": shape, "datatype": input["datatype"], "parameters": {"binary_data_size": tensor}}]});
    assert_eq!(input["datatype"], "UINT8", "the soak sends UINT8 tensors: {oip_input}");

    let ask = |kind: &str| match kind {
        "/v1/detect" | "/v1/classify" | "/v1/stego/check" => Ask::Image { path: leak(kind), content_type: "image/jpeg", photo: dog.clone() },
        "/v1/detect/fast" => Ask::Image { path: "/v1/detect/fast", content_type: "image/png", photo: chelsea.clone() },
        "/v1/stego/embed" => Ask::Image { path: "/v1/stego/embed?id=3141592653", content_type: "image/png", photo: chelsea.clone() },
        "/v1/fuse" => Ask::Fuse { path: "/v1/fuse", photo: dog.clone() },
        "/v2 infer" => Ask::Oip { header: Arc::new(header.to_string()), tensor },
        "/v1/videos" => Ask::Video { mp4: mp4.clone() },
        other => unreachable!("{other}"),
    };
    let serial = Arc::new(AtomicU64::new(0));
    let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    // Capacity: the closed loop for 10 s to warm up, then `measure_secs`
    // counted from a copy of the tallies taken at 10 s.
    eprintln!("soak: measuring what this machine serves of the mix ({measure_secs} s after 10 s to warm up)");
    let capacity = {
        let (tallies, stop): (Tallies, _) = (Arc::default(), Arc::new(AtomicBool::new(false)));
        let served = |t: &Tallies| -> BTreeMap<&'static str, u64> { t.lock().unwrap().iter().map(|(k, t)| (*k, t.ok_ms.len() as u64)).collect() };
        let asks: Vec<(&'static str, Ask)> = MIX.iter().flat_map(|(kind, n)| std::iter::repeat_n((*kind, ask(kind)), *n)).collect();
        let loops = {
            let (tallies, stop, serial, base, runtime) = (tallies.clone(), stop.clone(), serial.clone(), base.clone(), runtime());
            std::thread::spawn(move || {
                runtime.block_on(async move {
                    let tasks: Vec<_> = asks.into_iter().map(|(kind, ask)| tokio::spawn(closed_loop(base.clone(), kind, ask, tallies.clone(), stop.clone(), serial.clone()))).collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            })
        };
        std::thread::sleep(Duration::from_secs(10));
        let before = served(&tallies);
        std::thread::sleep(Duration::from_secs(measure_secs));
        let after = served(&tallies);
        stop.store(true, Ordering::SeqCst);
        loops.join().unwrap();
        let tallies = tallies.lock().unwrap();
        report_capacity(&tallies, measure_secs);
        MIX.iter()
            .map(|(kind, connections)| {
                let done = after.get(kind).copied().unwrap_or(0) - before.get(kind).copied().unwrap_or(0);
                let ms = tallies.get(kind).map_or(&[][..], |t| &t.ok_ms[..]);
                // A video job takes tens of seconds beside the rest, so a window
                // sees a few end, or none: Little's law instead (connections each
                // busy with one job at a time, over the mean job).
                let rate = if done < FEW && !ms.is_empty() {
                    *connections as f64 * 1e3 / (ms.iter().sum::<f64>() / ms.len() as f64)
                } else {
                    done as f64 / measure_secs as f64
                };
                (*kind, rate)
            })
            .collect::<BTreeMap<&'static str, f64>>()
    };
    let rates: BTreeMap<&'static str, f64> = capacity.iter().map(|(k, c)| (*k, (c * load).max(LEAST_RATE))).collect();
    for (kind, c) in &capacity {
        eprintln!("soak: {kind}: served {c:.2}/s at capacity; offered {:.2}/s", rates[kind]);
    }

    let tallies: Tallies = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    START.set(Instant::now()).expect("set once");
    let load_thread = {
        let (tallies, stop, serial, base, rates, runtime) = (tallies.clone(), stop.clone(), serial.clone(), base.clone(), rates.clone(), runtime());
        let asks: Vec<(&'static str, Ask)> = MIX.iter().map(|(kind, _)| (*kind, ask(kind))).collect();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let mut tasks: Vec<_> = asks
                    .into_iter()
                    .map(|(kind, ask)| tokio::spawn(open_loop(base.clone(), kind, ask, rates[kind], tallies.clone(), stop.clone(), serial.clone())))
                    .collect();
                tasks.push(tokio::spawn(reloads(base.clone(), tallies.clone(), stop.clone())));
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(10));
        let s = Sample::of(server.pid(), &base, started.elapsed());
        let answers: u64 = tallies.lock().unwrap().values().flat_map(|t| t.statuses.values()).sum();
        eprintln!(
            "soak {:>5}s  RSS {:.0} MiB  cache {:.0} MiB  files {}  threads {}  answers {answers}",
            s.at.as_secs(),
            s.rss_mib,
            s.cache_mib,
            s.files,
            s.threads
        );
        samples.push(s);
    }
    stop.store(true, Ordering::SeqCst);
    load_thread.join().unwrap();
    let peak = peak_rss_mib(server.pid());
    let code = report(&tallies.lock().unwrap(), &capacity, &rates, load, &samples, peak, secs);
    drop(server); // `exit` runs no destructor: the server would be left running.
    std::process::exit(code);
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// A 3 s, 10 fps, 320x240 mp4 of ffmpeg's test pattern (30 frames), made once.
fn small_mp4() -> PathBuf {
    let path = std::env::temp_dir().join("osprey-soak-testsrc2-320x240-3s.mp4");
    if !path.exists() {
        let tmp = path.with_extension(format!("{}.mp4", std::process::id()));
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10", "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
            .arg(&tmp)
            .status()
            .expect("ffmpeg (apt-get install ffmpeg)");
        assert!(status.success(), "ffmpeg made no soak video");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// When the soak's load began (unset while the capacity is measured): odd
/// answers are told by when they were sent, to set beside the reloads (every
/// 60 s from then).
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// How many odd answers are kept per kind, to be printed.
const ODD_KEPT: usize = 20;

/// Keeps an answer of another kind (`what`, with `text`) to print, up to
/// `ODD_KEPT` per kind, with when it was sent and how long it took.
fn keep_odd(tallies: &Tallies, kind: &'static str, sent: Instant, what: &str, text: &str) {
    let at = START.get().map_or(0.0, |start| sent.saturating_duration_since(*start).as_secs_f64());
    let mut all = tallies.lock().unwrap();
    let odd = &mut all.entry(kind).or_default().odd;
    if odd.len() < ODD_KEPT {
        odd.push(format!("{what} at {at:.0} s, after {:.2} s: {text}", sent.elapsed().as_secs_f64()));
    }
}

/// The clients a kind's requests go out on: one for requests, one for a video
/// job's events, which come for as long as the job runs (up to its own limit,
/// ten times the longest video): no whole-request timeout, only a silence
/// longer than three of the server's 10 s keep-alives.
#[derive(Clone)]
struct Clients {
    requests: reqwest::Client,
    events: reqwest::Client,
}

impl Clients {
    fn new() -> Clients {
        Clients {
            requests: reqwest::Client::builder().http1_only().timeout(Duration::from_secs(120)).build().unwrap(),
            events: reqwest::Client::builder().http1_only().read_timeout(Duration::from_secs(30)).build().unwrap(),
        }
    }
}

/// Sends `ask` once (its body made distinct by `n`), reads the answer (a
/// video job's events to the end), and tallies it; the status (0: no
/// answer) and the `Retry-After` of a refusal.
async fn send(clients: &Clients, base: &str, kind: &'static str, ask: &Ask, tallies: &Tallies, n: u64) -> (u16, Option<Duration>) {
    let client = &clients.requests;
    // Bytes after the image's end: the decoders ignore them, the cache key does not.
    let distinct = |photo: &[u8]| {
        let mut b = photo.to_vec();
        b.extend_from_slice(format!("\n{n}").as_bytes());
        b
    };
    let sent = Instant::now();
    let request = match ask {
        Ask::Image { path, content_type, photo } => client.post(format!("{base}{path}")).header("content-type", *content_type).body(distinct(photo)),
        Ask::Fuse { path, photo } => {
            let part = |b: Vec<u8>| reqwest::multipart::Part::bytes(b).file_name("cam.jpg").mime_str("image/jpeg").unwrap();
            let form = reqwest::multipart::Form::new().part("visible", part(distinct(photo))).part("infrared", part(distinct(photo)));
            client.post(format!("{base}{path}")).multipart(form)
        }
        Ask::Oip { header, tensor } => {
            let mut body = header.as_bytes().to_vec();
            body.extend((0..*tensor).map(|i| (i as u64).wrapping_mul(n | 1).wrapping_add(n) as u8));
            client
                .post(format!("{base}/v2/models/efficientnet_lite3/infer"))
                .header("content-type", "application/octet-stream")
                .header("inference-header-content-length", header.len())
                .body(body)
        }
        Ask::Video { mp4 } => client.post(format!("{base}/v1/videos?route=/v1/detect/fast")).header("content-type", "video/mp4").body(mp4.to_vec()),
    };
    let (status, bare_503, retry_after) = match request.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).map(Duration::from_secs);
            let bare = status == 503 && retry_after.is_none();
            let body = resp.bytes().await;
            if !expected(status) {
                let text = body.as_ref().map(|b| String::from_utf8_lossy(b).chars().take(300).collect::<String>()).unwrap_or_default();
                keep_odd(tallies, kind, sent, &format!("{status}"), &text);
            }
            let status = match (ask, status, body) {
                // The job's events, read to its end: a failed job counts as a 500.
                (Ask::Video { .. }, 202, Ok(body)) => match follow(&clients.events, base, &body).await {
                    Ok(()) => 200,
                    Err((status, why)) => {
                        keep_odd(tallies, kind, sent, if status == 0 { "job cut" } else { "job failed" }, &why);
                        status
                    }
                },
                (_, s, Ok(_)) => s,
                (_, _, Err(_)) => 0,
            };
            (status, bare, retry_after)
        }
        Err(e) => {
            keep_odd(tallies, kind, sent, "no answer", &format!("{e:?}"));
            (0, false, None)
        }
    };
    let took = sent.elapsed().as_secs_f64() * 1e3;
    let mut all = tallies.lock().unwrap();
    let t = all.entry(kind).or_default();
    *t.statuses.entry(status).or_default() += 1;
    t.bare_503 += u64::from(bare_503);
    if (200..300).contains(&status) {
        t.ok_ms.push(took);
    }
    (status, retry_after)
}

/// One connection of the capacity measure: sends again as soon as it is
/// answered, after the `Retry-After` of a refusal (at most 5 s).
async fn closed_loop(base: String, kind: &'static str, ask: Ask, tallies: Tallies, stop: Arc<AtomicBool>, serial: Arc<AtomicU64>) {
    let clients = Clients::new();
    while !stop.load(Ordering::Relaxed) {
        let n = serial.fetch_add(1, Ordering::Relaxed);
        let (status, retry_after) = send(&clients, &base, kind, &ask, &tallies, n).await;
        if status == 429 || status == 503 {
            tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(5))).await;
        }
    }
}

/// The soak's requests of one kind: one every 1/`rate` seconds whatever the
/// answers, at most `OUTSTANDING` unanswered.
async fn open_loop(base: String, kind: &'static str, ask: Ask, rate: f64, tallies: Tallies, stop: Arc<AtomicBool>, serial: Arc<AtomicU64>) {
    let clients = Clients::new();
    let outstanding = Arc::new(tokio::sync::Semaphore::new(OUTSTANDING));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // Behind after a stall of this client: go on at the rate, no burst to catch up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        while sent.try_join_next().is_some() {}
        let Ok(permit) = outstanding.clone().try_acquire_owned() else {
            *tallies.lock().unwrap().entry(kind).or_default().statuses.entry(NOT_SENT).or_default() += 1;
            continue;
        };
        let n = serial.fetch_add(1, Ordering::Relaxed);
        let (clients, base, ask, tallies) = (clients.clone(), base.clone(), ask.clone(), tallies.clone());
        sent.spawn(async move {
            send(&clients, &base, kind, &ask, &tallies, n).await;
            drop(permit);
        });
    }
    // What was sent before the end is answered and tallied.
    while sent.join_next().await.is_some() {}
}

/// The status an arrival is tallied under when `OUTSTANDING` were unanswered
/// already, so it was not sent (an answer of another kind: the soak fails).
const NOT_SENT: u16 = 1;

/// Reads a video job's events to the end: `Ok` when it ended `done`; else
/// 500 when it ended `failed`, 0 when the stream was cut, and what was seen.
async fn follow(client: &reqwest::Client, base: &str, accepted: &[u8]) -> Result<(), (u16, String)> {
    let answer = serde_json::from_slice::<serde_json::Value>(accepted).map_err(|e| (0, format!("the 202's body is no JSON: {e}")))?;
    let events = answer["events"].as_str().ok_or_else(|| (0, format!("the 202 names no events: {answer}")))?;
    let resp = client.get(format!("{base}{events}")).send().await.map_err(|e| (0, format!("GET {events}: {e:?}")))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| (0, format!("reading {events} ({status}): {e:?}")))?;
    let tail = || text.chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect::<String>();
    if text.contains("event: done") {
        Ok(())
    } else if text.contains("event: failed") {
        Err((500, tail()))
    } else {
        Err((0, format!("{status}, {} bytes, ending: {}", text.len(), tail())))
    }
}

/// `POST /admin/reload` every minute; each answer tallied under "reload".
async fn reloads(base: String, tallies: Tallies, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut next = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        next += Duration::from_secs(60);
        let sent = Instant::now();
        let status = match client.post(format!("{base}/admin/reload")).bearer_auth(TOKEN).send().await {
            Ok(resp) => resp.status().as_u16(),
            Err(_) => 0,
        };
        let mut all = tallies.lock().unwrap();
        let t = all.entry("reload (every 60 s)").or_default();
        *t.statuses.entry(status).or_default() += 1;
        if status == 200 {
            t.ok_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        }
    }
}

/// The server's RSS, result cache, open files and threads at one moment.
struct Sample {
    at: Duration,
    rss_mib: f64,
    /// What the result cache holds (`osprey_cache_bytes`): answers kept by
    /// design up to their TTL and `[cache] max_bytes`, not a leak.
    cache_mib: f64,
    files: usize,
    threads: usize,
}

impl Sample {
    fn of(pid: u32, base: &str, at: Duration) -> Sample {
        let metrics = reqwest::blocking::get(format!("{base}/metrics")).and_then(|r| r.text()).unwrap_or_default();
        let cache_bytes = metrics.lines().find_map(|l| l.strip_prefix("osprey_cache_bytes ")).and_then(|v| v.trim().parse::<f64>().ok());
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().trim_end_matches("kB").trim().to_string());
        Sample {
            at,
            rss_mib: field("VmRSS:").and_then(|v| v.parse::<f64>().ok()).map_or(f64::NAN, |k| k / 1024.0),
            cache_mib: cache_bytes.map_or(f64::NAN, |b| b / f64::from(1 << 20)),
            threads: field("Threads:").and_then(|v| v.parse().ok()).unwrap_or(0),
            files: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
        }
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(f64::NAN, |k| k / 1024.0)
}

/// Open files and threads may differ by this much from the end of the first
/// minute to the end: connections and blocking-pool threads come and go with
/// the load, and a reload builds the next snapshot beside the current one.
const FILES_SLACK: usize = 32;
const THREADS_SLACK: usize = 16;

/// Prints one row per kind (`first`: what goes between its name and its
/// answers) and returns how many answers were of another kind.
fn rows(tallies: &BTreeMap<&'static str, Tally>, first: &dyn Fn(&str) -> String) -> u64 {
    let mut bad = 0;
    for (kind, t) in tallies {
        let count = |f: &dyn Fn(u16) -> bool| t.statuses.iter().filter(|(s, _)| f(**s)).map(|(_, n)| n).sum::<u64>();
        let (total, ok, r429, r503) = (count(&|_| true), count(&|s| (200..300).contains(&s)), count(&|s| s == 429), count(&|s| s == 503));
        bad += t.other();
        let mut ms = t.ok_ms.clone();
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| ms.get(((ms.len() as f64 * p / 100.0) as usize).min(ms.len().saturating_sub(1))).map_or("-".into(), |v| format!("{v:.0}"));
        let others: Vec<String> = t
            .statuses
            .iter()
            .filter(|(s, _)| !expected(**s))
            .map(|(s, n)| match *s {
                NOT_SENT => format!("{n} not sent"),
                0 => format!("{n} cut or unanswered"),
                s => format!("{n} x {s}"),
            })
            .collect();
        println!(
            "| {kind} | {} | {total} | {ok} | {r429} | {r503}{} | {} | {:.0}% | {} | {} |",
            first(kind),
            if t.bare_503 > 0 { format!(" ({} without)", t.bare_503) } else { String::new() },
            if others.is_empty() { "0".to_string() } else { others.join(", ") },
            100.0 * (r429 + r503) as f64 / total.max(1) as f64,
            pct(50.0),
            pct(99.0),
        );
    }
    bad
}

/// Prints the capacity measure's answers (not judged).
fn report_capacity(tallies: &BTreeMap<&'static str, Tally>, secs: u64) {
    println!("The capacity, measured closed loop for 10 s + {secs} s (not judged):\n");
    println!("| requests | connections | answers | 2xx | 429 | 503 (all with Retry-After) | other | refused | p50 2xx (ms) | p99 2xx (ms) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    rows(tallies, &|kind| MIX.iter().find(|(k, _)| *k == kind).map_or("-".into(), |(_, n)| n.to_string()));
    println!();
}

/// Prints the tables; the exit code (0: pass).
fn report(
    tallies: &BTreeMap<&'static str, Tally>,
    capacity: &BTreeMap<&'static str, f64>,
    rates: &BTreeMap<&'static str, f64>,
    load: f64,
    samples: &[Sample],
    peak: f64,
    secs: u64,
) -> i32 {
    println!("The soak, open loop:\n");
    println!("| requests | capacity (2xx/s) | offered (/s, {load}x) | answers | 2xx | 429 | 503 (all with Retry-After) | other | refused | p50 2xx (ms) | p99 2xx (ms) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let per_s = |m: &BTreeMap<&'static str, f64>, kind: &str| m.get(kind).map_or("every 60 s".into(), |r| format!("{r:.2}"));
    let bad = rows(tallies, &|kind| format!("{} | {}", per_s(capacity, kind), per_s(rates, kind)));
    for (kind, t) in tallies {
        for odd in &t.odd {
            println!("\n{kind}: {odd}");
        }
    }
    let after = samples.iter().find(|s| s.at >= Duration::from_secs(60)).or(samples.first());
    let (Some(after), Some(end)) = (after, samples.last()) else {
        println!("no samples: the soak ran less than 10 s");
        return 1;
    };
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at >= after.at).collect();
    let range = |f: &dyn Fn(&Sample) -> f64| {
        let v: Vec<f64> = steady.iter().map(|s| f(s)).collect();
        (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
    };
    let (rss_lo, rss_hi) = range(&|s| s.rss_mib);
    let (cache_lo, cache_hi) = range(&|s| s.cache_mib);
    let rest = |s: &Sample| s.rss_mib - s.cache_mib;
    let (rest_lo, rest_hi) = range(&rest);
    let (files_lo, files_hi) = range(&|s| s.files as f64);
    let (threads_lo, threads_hi) = range(&|s| s.threads as f64);
    println!();
    println!("| {secs} s | after 1 min | at the end | min-max from 1 min | peak |\n|---|---:|---:|---:|---:|");
    println!("| RSS (MiB) | {:.0} | {:.0} | {rss_lo:.0}-{rss_hi:.0} | {peak:.0} |", after.rss_mib, end.rss_mib);
    println!("| result cache (MiB) | {:.0} | {:.0} | {cache_lo:.0}-{cache_hi:.0} | |", after.cache_mib, end.cache_mib);
    println!("| RSS less the result cache (MiB) | {:.0} | {:.0} | {rest_lo:.0}-{rest_hi:.0} | |", rest(after), rest(end));
    println!("| open files | {} | {} | {files_lo}-{files_hi} | |", after.files, end.files);
    println!("| threads | {} | {} | {threads_lo}-{threads_hi} | |", after.threads, end.threads);
    // The cache fills towards its bound for the first TTL (10 minutes by
    // default) by design; what else the process holds must stay flat.
    let rss_flat = (rest(end) - rest(after)).abs() <= rest(after) * 0.10;
    let files_flat = end.files.abs_diff(after.files) <= FILES_SLACK;
    let threads_flat = end.threads.abs_diff(after.threads) <= THREADS_SLACK;
    let pass = bad == 0 && rss_flat && files_flat && threads_flat;
    println!(
        "\nverdict: {} (answers of another kind: {bad}; RSS less the result cache within 10 %: {rss_flat}; open files within {FILES_SLACK}: {files_flat}; threads within {THREADS_SLACK}: {threads_flat})",
        if pass { "pass" } else { "FAIL" }
    );
    i32::from(!pass)
}
