//! What each plugin costs per call, inside osprey (the `.wasm` in its
//! sandbox, instantiated per call as in serving) beside the same Rust code
//! compiled natively into this bench. Models are not counted: the wasm side
//! is the stage's own time (`Outcome::stages`) less its wasi-nn `compute`.
//!
//! - `yolo`: decoding the full YOLOv5s head (25200 candidates x 80 classes)
//!   and class-aware NMS, at conf 0.25 (the default) and 0.01 (many boxes).
//! - `render`: boxes and labels drawn on a 1920x1080 photo, encoded as JPEG.
//! - `stego`: embed and check on the same 1080p frame.
//! - `fusion`: the seed rule and WBF on two branches of 100 boxes each.
//!
//! Run: `cargo bench -p osprey-tests --bench plugins` (after `make setup`).
//! The table goes to stdout and to `target/bench-plugins.md`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use osprey::imaging::{self, Format};
use osprey::plugin::sandbox::{StageCall, Start};
use osprey::plugin::{Blob, Outcome, Sandbox};
use osprey::snapshot::Snapshot;
use osprey_plugin_sdk::nn::Output;
use osprey_plugin_sdk::{Bbox, Branch, Detection, Frame, Size, TensorType};
use serde_json::json;

const RUNS: usize = 30;

struct Row {
    plugin: &'static str,
    work: String,
    wasm_ms: f64,
    native_ms: f64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` (and cargo test) ask for a list of benches.
    }
    let config = osprey::config::load(&osprey_tests::repo().join("config/osprey.toml")).unwrap_or_else(|e| panic!("{e}\n(run `make setup` first)"));
    let engine = osprey::plugin::Engine::for_server(&config.server).expect("engine");
    let snap = Snapshot::build(config, &engine, None).unwrap_or_else(|e| panic!("{e}"));
    let mut rows = Vec::new();
    rows.extend(yolo(&snap));
    let hd = photo_1080p();
    rows.extend(render(&snap, &hd));
    rows.extend(stego(&snap, &hd));
    rows.extend(fusion(&snap));

    let mut s = String::from("| plugin | work per call | in osprey (wasm) ms | native ms | wasm / native |\n|---|---|---:|---:|---:|\n");
    for r in &rows {
        let _ = writeln!(s, "| {} | {} | {:.2} | {:.2} | {:.2}x |", r.plugin, r.work, r.wasm_ms, r.native_ms, r.wasm_ms / r.native_ms);
    }
    println!("\n{s}");
    let out = osprey_tests::repo().join("target/bench-plugins.md");
    std::fs::write(&out, &s).expect("write the table");
    println!("(also in {})", out.display());
}

/// Median of `RUNS` timings of `f`, in ms, after two warm-up calls.
fn median(mut f: impl FnMut() -> Duration) -> f64 {
    f();
    f();
    let mut v: Vec<f64> = (0..RUNS).map(|_| f().as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// Runs plugins `names` with `settings` through a fresh sandbox, as a route would.
fn run(snap: &Snapshot, chain: &[(&str, serde_json::Value)], start: Start) -> Outcome {
    let plugins: Vec<Arc<osprey::plugin::Plugin>> = chain.iter().map(|(n, _)| snap.plugins.iter().find(|p| p.name == *n).expect("plugin").clone()).collect();
    let calls: Vec<StageCall<'_>> = plugins.iter().zip(chain).map(|(p, (_, s))| StageCall { plugin: p, settings: s.to_string().into() }).collect();
    let sandbox = Sandbox { engine: &snap.engine, registry: snap.registry.clone(), request_id: 0 };
    sandbox.run(&calls, start, Instant::now() + Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
}

fn upload(bytes: &[u8], content_type: &str) -> Start {
    Start { input: Some(Blob { content_type: content_type.into(), bytes: bytes.to_vec().into() }), branches: Vec::new() }
}

/// The time of the chain's stage `plugin`, less the model time inside it.
fn stage_ms(o: &Outcome, plugin: &str, less_inference: bool) -> Duration {
    let t = o.stages.iter().find(|(n, _)| n == plugin).expect("stage ran").1;
    if less_inference { t.saturating_sub(o.inference) } else { t }
}

fn prep() -> serde_json::Value {
    json!({"width": 640, "height": 640, "fit": "letterbox", "pad": 114, "layout": "nhwc", "dtype": "fp32", "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]})
}

fn yolo(snap: &Snapshot) -> Vec<Row> {
    let photo = osprey_tests::image("dog.jpg");
    // The real head of YOLOv5s on the photo, natively, for the native side.
    let model = snap.registry.get("yolov5s").expect("yolov5s");
    let image = imaging::decode(&photo, 40_000_000).unwrap();
    let spec = imaging::TensorSpec {
        width: 640, height: 640, fit: imaging::Fit::Letterbox, pad: 114, layout: imaging::Layout::Nhwc, bgr: false,
        elem: imaging::Elem::F32, mean: [0.0; 3], std: [255.0; 3],
    };
    let (input, _) = imaging::to_tensor(&image, &spec).unwrap();
    let outputs = model.run(vec![("input".into(), input)]).unwrap();
    let t = &outputs[0].1;
    let head = Output::new("yolov5s output 0".into(), t.dims.clone(), TensorType::Fp32, t.to_bytes()).unwrap();
    let mut rows = Vec::new();
    for conf in [0.25, 0.01] {
        let settings = json!({"model": "yolov5s", "conf": conf, "iou": 0.45, "max_det": 300});
        let wasm = median(|| stage_ms(&run(snap, &[("image-prep", prep()), ("yolo", settings.clone())], upload(&photo, "image/jpeg")), "yolo", true));
        let native_settings = yolo::Settings::parse(&settings.to_string()).unwrap();
        let input = Size { width: 640, height: 640 };
        let mut found = 0;
        // As in the plugin: the head's bytes copied out of the tensor, then read in place.
        let native = median(|| {
            timed(|| {
                let head = Output::new("yolov5s output 0".into(), t.dims.clone(), TensorType::Fp32, t.to_bytes()).unwrap();
                found = yolo::detect(&head, input, &native_settings).unwrap().len();
            })
        });
        let decode_only = median(|| timed(|| drop(std::hint::black_box(yolo::detect(&head, input, &native_settings).unwrap()))));
        let dims = t.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        rows.push(Row { plugin: "yolo", work: format!("copy out + decode {dims} head + NMS, conf {conf} ({found} boxes; decode + NMS alone {decode_only:.2} ms native)"), wasm_ms: wasm, native_ms: native });
    }
    rows
}

/// dog.jpg scaled to 1920x1080 (a full-HD frame), as a JPEG.
fn photo_1080p() -> Vec<u8> {
    let img = imaging::decode(&osprey_tests::image("dog.jpg"), 40_000_000).unwrap();
    let rgb = image::RgbImage::from_raw(img.width, img.height, img.rgb).unwrap();
    let hd = image::imageops::resize(&rgb, 1920, 1080, image::imageops::FilterType::Triangle);
    let img = imaging::from_pixels(1920, 1080, hd.into_raw(), u64::MAX).unwrap();
    imaging::encode(&img, Format::Jpeg, 90).unwrap().0
}

fn render(snap: &Snapshot, hd: &[u8]) -> Vec<Row> {
    let detect = [("image-prep", prep()), ("yolo", json!({"model": "yolov5s"}))];
    let with_render = [detect[0].clone(), detect[1].clone(), ("render", json!({"format": "jpeg", "quality": 90}))];
    let wasm = median(|| stage_ms(&run(snap, &with_render, upload(hd, "image/jpeg")), "render", false));
    let found = run(snap, &detect, upload(hd, "image/jpeg")).detections.unwrap_or_default();
    let dets: Vec<Detection> = found
        .iter()
        .map(|d| Detection {
            class_id: d.class_id,
            label: d.label.clone(),
            score: d.score,
            box_: Bbox { x1: d.box_.x1, y1: d.box_.y1, x2: d.box_.x2, y2: d.box_.y2 },
            sources: d.sources.clone(),
        })
        .collect();
    let style = render::Style::default();
    let native = median(|| {
        timed(|| {
            let mut img = imaging::decode(hd, 40_000_000).unwrap();
            render::annotate(&mut img.rgb, img.width, img.height, &dets, &style).unwrap();
            std::hint::black_box(imaging::encode(&img, Format::Jpeg, 90).unwrap());
        })
    });
    vec![Row { plugin: "render", work: format!("decode 1920x1080 JPEG, draw {} boxes, encode JPEG", dets.len()), wasm_ms: wasm, native_ms: native }]
}

fn stego(snap: &Snapshot, hd: &[u8]) -> Vec<Row> {
    let embed = [("stego", json!({"mode": "embed", "id": 123456789u32, "format": "png"}))];
    let wasm_embed = median(|| stage_ms(&run(snap, &embed, upload(hd, "image/jpeg")), "stego", false));
    let marked = run(snap, &embed, upload(hd, "image/jpeg")).output.expect("a marked image").bytes;
    let check = [("stego", json!({"mode": "check"}))];
    let wasm_check = median(|| stage_ms(&run(snap, &check, upload(&marked, "image/png")), "stego", false));
    let native_embed = median(|| {
        timed(|| {
            let mut img = imaging::decode(hd, 40_000_000).unwrap();
            stego::mark::embed(&mut img.rgb, img.width, img.height, 123456789, stego::mark::DEFAULT_STRENGTH, stego::mark::DEFAULT_KEY);
            std::hint::black_box(imaging::encode(&img, Format::Png, 90).unwrap());
        })
    });
    let native_check = median(|| {
        timed(|| {
            let img = imaging::decode(&marked, 40_000_000).unwrap();
            std::hint::black_box(stego::mark::check(&img.rgb, img.width, img.height, stego::mark::DEFAULT_KEY));
        })
    });
    vec![
        Row { plugin: "stego", work: "embed: decode 1920x1080 JPEG, mark, encode PNG".into(), wasm_ms: wasm_embed, native_ms: native_embed },
        Row { plugin: "stego", work: "check: decode 1920x1080 PNG, find the mark".into(), wasm_ms: wasm_check, native_ms: native_check },
    ]
}

/// Two branches of 100 boxes each in a 1920x1080 frame, from a fixed seed;
/// the second half of the infrared boxes shifted copies of visible ones.
fn branches() -> Vec<Branch> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut boxes = |n: usize| -> Vec<Detection> {
        let mut v: Vec<Detection> = (0..n)
            .map(|_| {
                let (x, y, w, h) = (next() * 1800.0, next() * 1000.0, 20.0 + next() * 200.0, 20.0 + next() * 200.0);
                let box_ = Bbox { x1: x, y1: y, x2: (x + w).min(1920.0), y2: (y + h).min(1080.0) };
                Detection { class_id: (next() * 5.0) as u32, label: String::new(), score: 0.05 + next() * 0.95, box_, sources: Vec::new() }
            })
            .collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score));
        v
    };
    let visible = boxes(100);
    let mut infrared = boxes(50);
    infrared.extend(visible.iter().take(50).map(|d| Detection { box_: Bbox { x1: d.box_.x1 + 4.0, x2: d.box_.x2 + 4.0, ..d.box_ }, ..d.clone() }));
    let size = Some(Size { width: 1920, height: 1080 });
    vec![
        Branch { name: "visible".into(), source: size, model: Some("a".into()), detections: visible },
        Branch { name: "infrared".into(), source: size, model: Some("b".into()), detections: infrared },
    ]
}

fn fusion(snap: &Snapshot) -> Vec<Row> {
    let mut rows = Vec::new();
    for settings in [json!({"method": "rule", "iou_thr": 0.75}), json!({"method": "wbf", "iou_thr": 0.55, "weights": {"visible": 2.0, "infrared": 1.0}})] {
        let start = || Start { input: None, branches: host_branches(&branches()) };
        let chain = [("fusion", settings.clone())];
        let wasm = median(|| stage_ms(&run(snap, &chain, start()), "fusion", false));
        let parsed = fusion::Settings::parse(&settings.to_string()).unwrap();
        let native = median(|| {
            let frame = frame_with(branches());
            timed(|| drop(std::hint::black_box(fusion::fuse_frame(frame, &parsed).unwrap())))
        });
        rows.push(Row { plugin: "fusion", work: format!("{}: 2 branches x 100 boxes", settings["method"].as_str().unwrap()), wasm_ms: wasm, native_ms: native });
    }
    rows
}

/// The SDK's (guest) records as the host's bindings: the same WIT types.
fn host_branches(list: &[Branch]) -> Vec<osprey::plugin::sandbox::Branch> {
    use osprey::plugin::sandbox as host;
    let det = |d: &Detection| host::Detection {
        class_id: d.class_id,
        label: d.label.clone(),
        score: d.score,
        box_: osprey::plugin::bindings::osprey::plugin::types::Bbox { x1: d.box_.x1, y1: d.box_.y1, x2: d.box_.x2, y2: d.box_.y2 },
        sources: d.sources.clone(),
    };
    list.iter()
        .map(|b| host::Branch {
            name: b.name.clone(),
            source: b.source.map(|s| host::Size { width: s.width, height: s.height }),
            model: b.model.clone(),
            detections: b.detections.iter().map(det).collect(),
        })
        .collect()
}

fn frame_with(branches: Vec<Branch>) -> Frame {
    Frame { branches, ..osprey_plugin_sdk::empty_frame() }
}
