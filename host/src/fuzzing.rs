//! One entry per fuzz target (`host/fuzz`, `make fuzz`): each takes the raw
//! bytes a client, a config file, ffprobe or a plugin could hand the host,
//! runs them through the host's own parser, and asserts what must hold of
//! any input: a refusal is the client's error (4xx), never a panic or a 500,
//! and what is accepted is within the limits that were checked.
//!
//! The fuzz targets are one line each over these, and `host/tests/fuzz_corpus.rs`
//! runs the kept corpus through the same functions on stable, so the corpus
//! and every input a fuzzer ever found stays a test of `make test`.
//!
//! On the top floor: it reaches into rooms of every floor below.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::imaging::{self, mjpeg, Elem, Fit, Layout, TensorSpec};
use crate::nn::model::Port;
use crate::nn::{Batching, ElemType, Identity, LoadSpec, Model, NnError, Opened, RemoteModel, Target, Tensor, Threads};
use crate::plugin::bindings::osprey::plugin::types::Bbox;
use crate::plugin::sandbox::{read_report, Detection, RESERVED_FIELDS};
use crate::plugin::Outcome;

/// An upload: `Content-Type` on the first line, the route's fields
/// (comma-separated; none: the plain `image`) on the second, then the body
/// as the server has read it whole.
pub fn upload(data: &[u8]) {
    let (content_type, rest) = line(data);
    let (fields, body) = line(rest);
    let fields = String::from_utf8_lossy(fields);
    let fields: Vec<&str> = if fields.is_empty() { vec!["image"] } else { fields.split(',').collect() };
    let content_type = String::from_utf8_lossy(content_type);
    let parsed = block_on(crate::http::body::parse_upload(&content_type, Bytes::copy_from_slice(body), &fields));
    match parsed {
        Ok(parts) => {
            assert_eq!(parts.len(), fields.len(), "one part per field");
            assert!(parts.iter().all(|p| !p.bytes.is_empty()), "an empty part is refused");
        }
        Err(e) => {
            let status = crate::http::respond::error(&e).status();
            assert!(status.is_client_error(), "a malformed upload is answered {status}: {e}");
        }
    }
}

/// An Open Inference Protocol request body (JSON, or JSON then binary
/// tensors): `Inference-Header-Content-Length` on the first line (empty:
/// absent), then the body, against a model that answers its inputs back.
pub fn oip(data: &[u8]) {
    let (header, body) = line(data);
    let header = std::str::from_utf8(header).ok().filter(|h| !h.is_empty());
    let until = Instant::now() + Duration::from_secs(10);
    match crate::oip::answer(&echo_model(), Bytes::copy_from_slice(body), header, until) {
        Ok(resp) => assert!(resp.status().is_success()),
        Err(e) => assert!(e.status().is_client_error(), "a malformed request is answered {}: {e}", e.status()),
    }
}

/// A config file: every mistake a diagnostic with its line and column.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match crate::config::parse(&text, Path::new("/nonexistent/osprey.toml")) {
        Ok(_) => {}
        Err(crate::config::ConfigError::Invalid { diagnostics, .. }) => {
            assert!(!diagnostics.is_empty(), "a refused config says why");
            let lines = text.lines().count().max(1);
            for d in &diagnostics {
                assert!(d.line >= 1 && d.line <= lines + 1, "line {} of {lines}: {}", d.line, d.message);
            }
        }
        Err(other) => panic!("parse reads no file, yet: {other}"),
    }
}

/// The most pixels an image may have here: small, so the fuzzer spends its
/// time in headers and decoders rather than in resizing big images.
const MAX_PIXELS: u64 = 1 << 20;

/// The image target's set-up: libFuzzer's panic hook aborts at any panic,
/// caught or not, and `imaging` catches the ones of zune-jpeg on purpose
/// (see `imaging::caught`). This hook lets those through to be caught; any
/// other panic still aborts, and so does one that escapes the host (the
/// fuzz target aborts on a panic that reaches it).
pub fn image_init() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.location().is_some_and(|l| l.file().contains("/zune-jpeg-")) {
            abort(info);
        }
    }));
}

/// An upload decoded (header checks, pixel limit, JPEG/PNG/WebP decoders,
/// EXIF orientation), into a small model input (the scaled JPEG decode),
/// and the same bytes as a stream's MJPEG output.
pub fn image(data: &[u8]) {
    if let Ok(img) = imaging::decode(data, MAX_PIXELS) {
        assert!(u64::from(img.width) * u64::from(img.height) <= MAX_PIXELS);
        assert_eq!(img.rgb.len(), img.width as usize * img.height as usize * 3);
    }
    let spec = TensorSpec {
        width: 32,
        height: 24,
        fit: Fit::Letterbox,
        pad: 114,
        layout: Layout::Nchw,
        bgr: false,
        elem: Elem::F32,
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    if let Ok((tensor, _, (w, h))) = imaging::decode_to_tensor(data, MAX_PIXELS, &spec) {
        assert!(u64::from(w) * u64::from(h) <= MAX_PIXELS);
        assert_eq!(tensor.dims, vec![1, 3, 24, 32]);
    }
    let mut buf = BytesMut::from(data);
    while let mjpeg::Split::Frame(frame) = mjpeg::split(&mut buf) {
        assert!(!frame.is_empty());
    }
}

/// What ffprobe printed about an upload.
pub fn ffprobe(data: &[u8]) {
    if let Ok(p) = crate::video::probe::parse(data) {
        assert!(p.width > 0 && p.height > 0 && u64::from(p.width) * u64::from(p.height) <= 7680 * 4320);
        assert!(p.fps.num > 0 && p.fps.den > 0 && p.fps.per_second() <= 1000.0);
    }
}

/// What a chain's last stage returned, as the host turns it into an answer:
/// NUL-separated, the content type of an encoded answer (`frame.output`),
/// then `frame.report`'s fields as name and JSON text; each field also
/// becomes a detection labelled with its name, its numbers taken from the text.
pub fn plugin_output(data: &[u8]) {
    let mut pieces = data.split(|&b| b == 0);
    let content_type = String::from_utf8_lossy(pieces.next().unwrap_or_default()).into_owned();
    let mut fields = Vec::new();
    while let (Some(name), Some(text)) = (pieces.next(), pieces.next()) {
        fields.push((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(text).into_owned()));
    }
    let detections = fields.iter().map(|(name, text)| detection(name, text.as_bytes())).collect();
    let media = crate::http::respond::Answer::Media { content_type, bytes: Bytes::new() };
    assert!(crate::http::respond::answer(media, "fuzz").headers().contains_key(hyper::header::CONTENT_TYPE));
    let report = match read_report("fuzz", fields) {
        Ok(report) => report,
        Err(e) => return assert!(e.to_string().contains("report field"), "{e}"),
    };
    assert!(report.iter().all(|(name, _)| !RESERVED_FIELDS.contains(&name.as_str())));
    let outcome = Outcome { detections: Some(detections), report, ..Outcome::default() };
    let json = crate::http::respond::outcome_json(&outcome, Duration::from_millis(1));
    let answer: serde_json::Value = serde_json::from_slice(&json).expect("the answer is JSON");
    assert!(answer["timing_ms"].is_object(), "a report cannot replace the host's own fields");
}

fn detection(label: &str, text: &[u8]) -> Detection {
    let mut raw = [0u8; 24];
    let n = text.len().min(raw.len());
    raw[..n].copy_from_slice(&text[..n]);
    let f = |i: usize| f32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
    Detection {
        class_id: u32::from_le_bytes(raw[20..24].try_into().expect("4 bytes")),
        label: label.to_string(),
        score: f(0),
        box_: Bbox { x1: f(4), y1: f(8), x2: f(12), y2: f(16) },
        sources: Vec::new(),
    }
}

/// The bytes up to the first newline, and those after it.
fn line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// The body parsers are async (multer) but never wait: the body is all there.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime");
    }
    RUNTIME.with(|rt| rt.block_on(f))
}

/// A model whose outputs are its inputs: the OIP target then covers the
/// request's decoding and the response's encoding, with no ONNX Runtime.
/// Its ports: a fixed image shape, a dynamic 2-D mask and 3-D ids (whose
/// dimensions' product can overflow), three element types among them.
fn echo_model() -> Model {
    let port = |name: &str, ty, shape: &[i64]| Port { name: name.into(), ty: Some(ty), shape: shape.to_vec() };
    let ports = vec![port("images", ElemType::F32, &[-1, 3, 2, 2]), port("mask", ElemType::U8, &[-1, -1]), port("ids", ElemType::I64, &[-1, -1, -1])];
    let id = Identity { name: "echo".into(), version: "1".into(), file: "echo".into(), sha256: String::new() };
    let spec = LoadSpec { target: Target::Cpu, instances: 1, threads: Threads::Auto, batching: Batching::default() };
    let opened = Opened { version: "1".into(), inputs: ports.clone(), outputs: ports, digest: String::new(), backend: Arc::new(Echo) };
    Model::remote(id, Vec::new(), &spec, opened)
}

struct Echo;

impl RemoteModel for Echo {
    fn infer(&self, inputs: Vec<(String, Tensor)>, _deadline: Instant) -> Result<Vec<(String, Tensor)>, NnError> {
        Ok(inputs)
    }
}
