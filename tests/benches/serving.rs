//! Serving benchmark: requests/s, p50/p99 and peak RSS of /v1/detect,
//! /v1/detect/fast and /v1/classify over loopback at concurrency 1, 8 and 32,
//! in one run beside (a) the same pipeline done natively in one Rust process
//! — decode, preprocessing, ONNX Runtime, post-processing, no HTTP, no WASM —
//! and (b) ONNX Runtime alone on an already preprocessed input. (a) is the
//! ceiling that the HTTP layer and the sandbox must approach: goal ≥ 0.9x of
//! its throughput at saturation and ≤ 1 ms added p50 at concurrency 1.
//!
//! Run: `make bench` (sets up first) or `cargo bench -p osprey-tests --bench serving`.
//! `OSPREY_BENCH_SECS` sets the measuring window (default 5 s, after 1 s of warm-up).
//!
//! - `http`: a fresh `target/release/osprey serve` per route on 127.0.0.1:0;
//!   N keep-alive HTTP/1.1 connections each POST the photo in a loop; every
//!   answer must be a 200. Peak RSS is the server's VmHWM after its three levels.
//! - `native`: this binary re-run as a child (`--native ROUTE`), so its RSS is
//!   its own; N threads run `osprey::imaging` decode + `to_tensor`, `Model::run`
//!   (same config, same sessions/threads as the server) and the plugins' own
//!   post-processing crates, compiled natively.
//! - `ort-only`: a child (`--ort ROUTE`) that prepares the input once, then N
//!   threads run `Model::run` on copies of it.
//!
//! The table goes to stdout and to `target/bench-serving.md`.

#[path = "serving/load.rs"]
mod load;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use load::{Clock, Stats, Window};
use osprey::imaging::{self, Elem, Fit, Layout, Placement, TensorSpec};
use osprey::config::{ModelDef, ModelSource};
use osprey::nn::model::Identity;
use osprey::nn::{Model, Tensor, TensorData};
use osprey_plugin_sdk::nn::Output;
use osprey_plugin_sdk::{geometry, labels, Size, TensorType};
use serde_json::{Map, Value};

/// Routes of the default config and the photo each is measured on.
const ROUTES: [(&str, &str, &str); 3] = [
    ("/v1/detect", "dog.jpg", "image/jpeg"),
    ("/v1/detect/fast", "chelsea.png", "image/png"),
    ("/v1/classify", "chelsea.png", "image/png"),
];
const LEVELS: [usize; 3] = [1, 8, 32];

struct Row {
    route: &'static str,
    mode: &'static str,
    concurrency: usize,
    stats: Stats,
    rss_mib: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    for (i, a) in args.iter().enumerate() {
        if a == "--native" || a == "--ort" || a == "--split" {
            return child(a, &args[i + 1]);
        }
    }
    let w = Window::from_env();
    let started = Instant::now();
    let mut rows = Vec::new();
    for &(route, photo, content_type) in &ROUTES {
        rows.extend(http_rows(route, photo, content_type, w));
        rows.extend(child_rows("--native", route));
        rows.extend(child_rows("--ort", route));
    }
    let mut report = table(&rows);
    report.push_str(&summary(&rows));
    report.push_str(&detect_split());
    println!("\n{report}");
    let out = repo().join("target/bench-serving.md");
    std::fs::write(&out, &report).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    eprintln!("wrote {} ({:.0} s in all)", out.display(), started.elapsed().as_secs_f64());
}

fn repo() -> PathBuf {
    osprey_tests::repo()
}

/// `OSPREY_BENCH_CONFIG`, else the default config: lets one compare, say,
/// other `instances`/`threads` for the models, on every mode alike.
fn config_path() -> PathBuf {
    std::env::var_os("OSPREY_BENCH_CONFIG").map_or_else(|| repo().join("config/osprey.toml"), PathBuf::from)
}

/// The three levels over HTTP against one fresh server.
fn http_rows(route: &'static str, photo: &str, content_type: &str, w: Window) -> Vec<Row> {
    let server = load::Server::start(&repo().join("target/release/osprey"), &config_path());
    let url = format!("http://{}{route}", server.addr);
    let body = osprey_tests::image(photo);
    // Distinct bodies: the result cache must not answer; this measures the pipeline.
    let stats: Vec<_> = LEVELS.iter().map(|&n| (n, load::http_distinct(&url, content_type, &body, n, w))).collect();
    let rss = server.peak_rss_mib();
    stats
        .into_iter()
        .map(|(concurrency, stats)| Row { route, mode: "http", concurrency, stats, rss_mib: rss })
        .collect()
}

/// Runs this binary as a child in `mode` and reads its `level p/s p50 p99` lines.
fn child_rows(mode: &str, route: &'static str) -> Vec<Row> {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .args([mode, route])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the bench child");
    assert!(out.status.success(), "bench child {mode} {route} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let rss: f64 = text.lines().find_map(|l| l.strip_prefix("rss ")).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    let name = if mode == "--native" { "native" } else { "ort-only" };
    text.lines()
        .filter_map(|l| l.strip_prefix("level "))
        .map(|l| {
            let v: Vec<f64> = l.split(' ').map(|x| x.parse().expect("a number")).collect();
            let stats = Stats { per_sec: v[1], p50_ms: v[2], p99_ms: v[3] };
            Row { route, mode: name, concurrency: v[0] as usize, stats, rss_mib: rss }
        })
        .collect()
}

/// The child's side: measure one route natively (or ORT alone) at every level.
fn child(mode: &str, route: &str) {
    let p = Pipeline::load(route);
    let (_, photo, _) = ROUTES.iter().find(|r| r.0 == route).expect("a known route");
    let bytes = osprey_tests::image(photo);
    if mode == "--split" {
        return p.print_split(&bytes);
    }
    let w = Window::from_env();
    let (input, placement, source) = p.prepare(&bytes);
    for n in LEVELS {
        let stats = match mode {
            "--native" => threads(n, w, || p.full(&bytes)),
            _ => threads(n, w, || {
                p.infer(input.clone());
            }),
        };
        println!("level {n} {} {} {}", stats.per_sec, stats.p50_ms, stats.p99_ms);
    }
    // The post-processing must give an answer, else the baseline measures nothing.
    assert!(p.post(p.infer(input), &placement, source) > 0, "{route}: no results natively");
    println!("rss {}", load::peak_rss_mib(std::process::id()));
}

/// `n` threads each calling `work` in a loop over the window.
fn threads(n: usize, w: Window, work: impl Fn() + Sync) -> Stats {
    let clock = Clock::new(w);
    let latencies = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let mut kept = Vec::new();
                    while clock.running() {
                        let start = Instant::now();
                        work();
                        kept.extend(clock.keep(start));
                    }
                    kept
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("bench thread")).collect()
    });
    Stats::of(latencies, w)
}

/// The interpreting stage of a route, parsed from its settings in the config.
enum Post {
    Yolo(yolo::Settings),
    Ssd(ssd::Settings),
    Classify(classify::Settings),
}

/// A route's chain without HTTP and WASM: the same settings, model and code.
struct Pipeline {
    spec: TensorSpec,
    max_pixels: u64,
    model: Model,
    post: Post,
}

impl Pipeline {
    fn load(path: &str) -> Pipeline {
        let config = osprey::config::load(&config_path()).unwrap_or_else(|e| panic!("{e}"));
        let route = config.routes.iter().find(|r| r.path == path).expect("route in config");
        let [prep, interpret] = &route.stages[..] else { panic!("{path}: two stages expected") };
        let json = Value::Object(interpret.settings.clone()).to_string();
        let post = match interpret.plugin.as_str() {
            "yolo" => Post::Yolo(yolo::Settings::parse(&json).expect("yolo settings")),
            "ssd" => Post::Ssd(ssd::Settings::parse(&json).expect("ssd settings")),
            "classify" => Post::Classify(classify::Settings::parse(&json).expect("classify settings")),
            other => panic!("no native twin of plugin {other}"),
        };
        let name = interpret.settings["model"].as_str().expect("a model setting");
        let def = config.models.iter().find(|m| m.name == name).expect("model in config");
        let (spec, max_pixels) = tensor_spec(&prep.settings);
        Pipeline { spec, max_pixels, model: load_model(def), post }
    }

    /// What `image-prep` does through the `imaging` interface.
    fn prepare(&self, bytes: &[u8]) -> (Tensor, Placement, Size) {
        let image = imaging::decode(bytes, self.max_pixels).expect("decode");
        let source = Size { width: image.width, height: image.height };
        let (tensor, placement) = imaging::to_tensor(&image, &self.spec).expect("to_tensor");
        (tensor, placement, source)
    }

    fn infer(&self, input: Tensor) -> Vec<(String, Tensor)> {
        self.model.run(vec![("input".into(), input)]).expect("model run")
    }

    fn full(&self, bytes: &[u8]) {
        let (input, placement, source) = self.prepare(bytes);
        std::hint::black_box(self.post(self.infer(input), &placement, source));
    }

    /// The interpreting plugin's own code; returns how many results it gave.
    fn post(&self, outputs: Vec<(String, Tensor)>, p: &Placement, source: Size) -> usize {
        let outs: Vec<Output> = outputs.iter().enumerate().map(|(i, (n, t))| output(self.model.name(), i, n, t)).collect();
        let placement = osprey_plugin_sdk::Placement {
            scale_x: p.scale_x,
            scale_y: p.scale_y,
            pad_x: p.pad_x as f32,
            pad_y: p.pad_y as f32,
            input: Size { width: self.spec.width, height: self.spec.height },
        };
        let mut dets = match &self.post {
            Post::Yolo(s) => yolo::detect(&outs[0], placement.input, s).expect("yolo"),
            Post::Ssd(s) => {
                let [boxes, classes, scores, count] = <[Output; 4]>::try_from(outs).expect("four SSD outputs");
                let heads = ssd::Heads { boxes, classes, scores, count };
                ssd::decode(&heads, placement.input, s.conf, s.max_det).expect("ssd")
            }
            Post::Classify(s) => {
                let probs = classify::probabilities(&outs[0], s).expect("classify");
                let top: Vec<(String, f32)> =
                    classify::top_k(&probs, s.top).into_iter().map(|(id, score)| (self.label(id), score)).collect();
                return std::hint::black_box(top).len();
            }
        };
        geometry::to_source(&mut dets, &placement, source);
        for d in &mut dets {
            d.label = self.label(d.class_id);
        }
        dets.len()
    }

    /// `labels::label` without the host call: what the host import answers.
    fn label(&self, class_id: u32) -> String {
        self.model.label(class_id).map_or_else(|| labels::fallback(class_id), str::to_string)
    }
}

/// The model as the server loads it: same file, labels, sessions and threads.
fn load_model(def: &ModelDef) -> Model {
    let ModelSource::File(file) = &def.source else { panic!("model '{}': the bench loads single-file models", def.name) };
    let labels = match &def.labels {
        Some(f) => std::fs::read_to_string(f).expect("labels").lines().map(|l| l.trim().to_string()).collect(),
        None => Vec::new(),
    };
    let id = Identity { name: def.name.clone(), version: "1".into(), file: file.clone(), sha256: String::new() };
    Model::load(id, labels, &def.load).unwrap_or_else(|e| panic!("{e}"))
}

/// A host tensor as the SDK's `Output`, through the same `to_bytes` that
/// answers wasi-nn's `tensor.data` (a plugin then copies those into its memory).
fn output(model: &str, i: usize, name: &str, t: &Tensor) -> Output {
    let what = format!("model '{model}' output {i} ({name})");
    let ty = match &t.data {
        TensorData::F32(_) => TensorType::Fp32,
        TensorData::U8(_) => TensorType::U8,
        _ => panic!("{what}: only FP32 and U8 outputs are read by these plugins"),
    };
    Output::new(what, t.dims.clone(), ty, t.to_bytes()).expect("output")
}

/// `image-prep`'s settings (and defaults) as the host's `TensorSpec`.
fn tensor_spec(s: &Map<String, Value>) -> (TensorSpec, u64) {
    let num = |k: &str, d: f64| s.get(k).and_then(Value::as_f64).unwrap_or(d);
    let text = |k: &str, d: &'static str| s.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
    let three = |k: &str, d: f32| -> [f32; 3] {
        match s.get(k).and_then(Value::as_array) {
            Some(v) if v.len() == 3 => std::array::from_fn(|i| v[i].as_f64().expect("a number") as f32),
            _ => [d; 3],
        }
    };
    let spec = TensorSpec {
        width: num("width", 640.0) as u32,
        height: num("height", 640.0) as u32,
        fit: if text("fit", "letterbox") == "stretch" { Fit::Stretch } else { Fit::Letterbox },
        pad: num("pad", 114.0) as u8,
        layout: if text("layout", "nhwc") == "nchw" { Layout::Nchw } else { Layout::Nhwc },
        bgr: text("channels", "rgb") == "bgr",
        elem: if text("dtype", "fp32") == "u8" { Elem::U8 } else { Elem::F32 },
        mean: three("mean", 0.0),
        std: three("std", 1.0),
    };
    (spec, num("max_pixels", 40_000_000.0) as u64)
}

impl Pipeline {
    /// Median ms of each step of one request, run alone (no contention).
    fn print_split(&self, bytes: &[u8]) {
        let median = |f: &mut dyn FnMut()| -> f64 { load::median_ms(15, f) };
        let image = imaging::decode(bytes, self.max_pixels).expect("decode");
        let (input, placement, source) = self.prepare(bytes);
        let outputs = self.infer(input.clone());
        let decode = median(&mut || drop(imaging::decode(bytes, self.max_pixels)));
        let prep = median(&mut || drop(imaging::to_tensor(&image, &self.spec)));
        let infer = median(&mut || drop(self.infer(input.clone())));
        let post = median(&mut || {
            std::hint::black_box(self.post(outputs.clone(), &placement, source));
        });
        // Part of `post`: the outputs as little-endian bytes (wasi-nn `tensor.data`).
        let bytes_out = median(&mut || drop(outputs.iter().map(|(_, t)| t.to_bytes()).collect::<Vec<_>>()));
        let full = median(&mut || self.full(bytes));
        println!(
            "split decode={decode:.2} prep={prep:.2} inference={infer:.2} post={post:.2} \
             (of which outputs to_bytes={bytes_out:.2}) full={full:.2}"
        );
    }
}

/// Where one /v1/detect request's time goes: natively step by step, and over
/// HTTP as the client sees it beside the server's own `timing_ms`.
fn detect_split() -> String {
    let (route, photo, content_type) = ROUTES[0];
    let out = Command::new(std::env::current_exe().expect("own path")).args(["--split", route]).output().expect("split");
    let native = String::from_utf8_lossy(&out.stdout);
    let native = native.lines().find_map(|l| l.strip_prefix("split ")).unwrap_or("?").to_string();
    let server = load::Server::start(&repo().join("target/release/osprey"), &config_path());
    let url = format!("http://{}{route}", server.addr);
    let body = osprey_tests::image(photo);
    let (client, mut client_ms, mut answer) = (reqwest::blocking::Client::new(), Vec::new(), Value::Null);
    for i in 0..15 {
        // A byte after the image's end makes each body new to the result cache.
        let mut bytes = body.clone();
        bytes.extend_from_slice(format!("\n{i}").as_bytes());
        let t = Instant::now();
        answer = load::one(&client, &url, content_type, &bytes);
        client_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    client_ms.sort_by(f64::total_cmp);
    let mut s = String::new();
    let _ = writeln!(s, "\nOne {route} request alone ({photo}, median of 15, ms):\n");
    let _ = writeln!(s, "- native: {native}");
    let _ = writeln!(s, "- http: client round trip {:.2}; server timing_ms of the last answer: {}", client_ms[7], answer["timing_ms"]);
    s
}

/// The one markdown table.
fn table(rows: &[Row]) -> String {
    let mut s = String::from("| route | mode | concurrency | req/s | p50 ms | p99 ms | peak RSS MiB |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.0} |",
            r.route, r.mode, r.concurrency, r.stats.per_sec, r.stats.p50_ms, r.stats.p99_ms, r.rss_mib
        );
    }
    s
}

/// Per route: HTTP against the native ceiling, against the goals.
fn summary(rows: &[Row]) -> String {
    let cell = |route: &str, mode: &str, n: usize| {
        rows.iter().find(|r| r.route == route && r.mode == mode && r.concurrency == n).map(|r| r.stats)
    };
    let mut s = String::from("\nGoals: http/native throughput at c=32 ≥ 0.9x; added p50 at c=1 (http − native) ≤ 1 ms.\n\n");
    for (route, _, _) in ROUTES {
        let (Some(h32), Some(n32), Some(h1), Some(n1)) =
            (cell(route, "http", 32), cell(route, "native", 32), cell(route, "http", 1), cell(route, "native", 1))
        else {
            continue;
        };
        let ratio = h32.per_sec / n32.per_sec;
        let added = h1.p50_ms - n1.p50_ms;
        let mark = |ok: bool| if ok { "met" } else { "MISSED" };
        let _ = writeln!(
            s,
            "- {route}: throughput {ratio:.2}x of native at c=32 ({}); added p50 at c=1 {added:+.2} ms ({})",
            mark(ratio >= 0.9),
            mark(added <= 1.0)
        );
    }
    s
}
