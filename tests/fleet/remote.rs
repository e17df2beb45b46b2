//! A model that another server runs: a *front* osprey whose `yolov5s` is
//! `remote` to osprey *nodes* (real processes, the real model) over the Open
//! Inference Protocol with the binary tensor extension. The front runs the
//! real `/v1/detect` chain (image-prep, then yolo through wasi-nn) and its
//! answer equals the node's local one; a dead node costs no request; no node
//! is a precise 503, and a reload then keeps the model; and the bytes on the wire are counted both ways a
//! gateway can work (forward the JPEG, or send the tensors).
//!
//! Triton, KServe and the others are not installed here: osprey's own OIP
//! server is the real one these tests talk to.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osprey_tests::process::{free_addr, Osprey, ANY_PORT};
use serde_json::Value;

use super::{client, fresh_dog, load, node_config, post};

const TOKEN: &str = "remote-test-token-0123456789";

/// YOLOv5s takes 1x640x640x3 f32 and gives 1x25200x85 f32.
const INPUT_BYTES: u64 = 640 * 640 * 3 * 4;
const OUTPUT_BYTES: u64 = 25200 * 85 * 4;

/// A front whose `yolov5s` runs on `nodes` (pool `tensors`), and whose
/// `/v1/detect` forwards the upload to the same nodes (pool `jpeg`): the same
/// answer made the two ways. `/v1/remote/detect` is the default config's
/// `/v1/detect` chain, on the remote model.
fn front_config(test: &str, nodes: &[String], health: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(osprey_tests::unique_name(&format!("osprey-remote-{test}")));
    std::fs::create_dir_all(&dir).unwrap();
    let repo = osprey_tests::repo();
    let list = nodes.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    let text = format!(
        r#"
[admin]
watch = false
token = "{TOKEN}"

[upstreams.tensors]
nodes = [{list}]
health_path = "/v2/health/ready"
{health}

[upstreams.jpeg]
nodes = [{list}]
{health}

[models.yolov5s]
remote = {{ upstream = "tensors", model = "yolov5s" }}
labels = "{repo}/models/yolov5s/labels.txt"
input = {{ layout = "nhwc", width = 640, height = 640, type = "fp32" }}

[plugins.image-prep]
file = "{repo}/target/wasm32-wasip2/plugin/image_prep.wasm"

[plugins.yolo]
file = "{repo}/target/wasm32-wasip2/plugin/yolo.wasm"

[[routes]]
path = "/v1/remote/detect"
cache_ttl_s = 0
stages = [
  {{ plugin = "image-prep", settings = {{ width = 640, height = 640, fit = "letterbox", pad = 114, layout = "nhwc", dtype = "fp32", mean = [0.0, 0.0, 0.0], std = [255.0, 255.0, 255.0] }} }},
  {{ plugin = "yolo", settings = {{ model = "yolov5s", conf = 0.25, iou = 0.45, max_det = 300 }} }},
]

[[routes]]
path = "/v1/detect"
upstream = "jpeg"
cache_ttl_s = 0
"#,
        repo = repo.display(),
        TOKEN = TOKEN
    );
    let path = dir.join("front.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Numbers equal within 1e-3 relative, everything else exactly.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-3 * x.abs().max(y.abs()).max(1e-9)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w))),
        _ => a == b,
    }
}

/// The sum of a metric family's samples whose labels contain every one of `labels`.
fn metric(server: &Osprey, family: &str, labels: &[&str]) -> f64 {
    let text = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn bytes(front: &Osprey, pool: &str, dir: &str) -> u64 {
    metric(front, "osprey_upstream_bytes_total", &[&format!("upstream=\"{pool}\""), &format!("dir=\"{dir}\"")]) as u64
}

/// One test owns the node and the front, and runs its cases in turn.
#[test]
fn a_front_runs_the_chain_on_a_model_another_osprey_serves() {
    let node = Osprey::start(&node_config(), ANY_PORT);
    let front = Osprey::start(&front_config("one", &[node.url("")], "health_interval_ms = 200"), ANY_PORT);
    detections_equal_the_nodes_own(&node, &front);
    the_bytes_on_the_wire_are_the_tensors_or_the_jpeg(&front);
    the_front_serves_the_remote_model_over_oip_too(&front);
}

fn detections_equal_the_nodes_own(node: &Osprey, front: &Osprey) {
    let arrived = metric(node, "osprey_oip_infer_requests_total", &["model=\"yolov5s\"", "status=\"200\""]);
    let dog = osprey_tests::image("dog.jpg");
    let (status, _, local) = post(&node.url("/v1/detect"), dog.clone());
    assert_eq!(status, 200, "{local}");
    let (status, _, remote) = post(&front.url("/v1/remote/detect"), dog);
    assert_eq!(status, 200, "{remote}");
    let dets = remote["detections"].as_array().unwrap();
    assert!(dets.iter().any(|d| d["label"] == "dog"), "{remote}");
    assert!(close(&local["detections"], &remote["detections"]), "remote {}\nlocal {}", remote["detections"], local["detections"]);
    let after = metric(node, "osprey_oip_infer_requests_total", &["model=\"yolov5s\"", "status=\"200\""]);
    assert_eq!(after - arrived, 1.0, "the node's /metrics counts the front's infer request");
}

fn the_bytes_on_the_wire_are_the_tensors_or_the_jpeg(front: &Osprey) {
    let dog = osprey_tests::image("dog.jpg");
    let before = [bytes(front, "tensors", "sent"), bytes(front, "tensors", "received"), bytes(front, "jpeg", "sent"), bytes(front, "jpeg", "received")];
    assert_eq!(post(&front.url("/v1/remote/detect"), dog.clone()).0, 200);
    assert_eq!(post(&front.url("/v1/detect"), dog.clone()).0, 200);
    let after = [bytes(front, "tensors", "sent"), bytes(front, "tensors", "received"), bytes(front, "jpeg", "sent"), bytes(front, "jpeg", "received")];
    let [t_sent, t_recv, j_sent, j_recv]: [u64; 4] = std::array::from_fn(|i| after[i] - before[i]);
    eprintln!("bytes on the wire for one /v1/detect of dog.jpg ({} bytes): tensors sent {t_sent} received {t_recv}; jpeg sent {j_sent} received {j_recv}", dog.len());
    // The tensors plus a JSON header of a few hundred bytes each way.
    assert!((INPUT_BYTES..INPUT_BYTES + 1024).contains(&t_sent), "tensors sent: {t_sent}");
    assert!((OUTPUT_BYTES..OUTPUT_BYTES + 1024).contains(&t_recv), "tensors received: {t_recv}");
    assert_eq!(j_sent, dog.len() as u64, "the upload goes as it came");
    assert!(j_recv < 10_000, "detections are a small JSON answer: {j_recv}");
    assert!((t_sent + t_recv) / (j_sent + j_recv) > 50, "tensors cost far more than the JPEG");
}

fn the_front_serves_the_remote_model_over_oip_too(front: &Osprey) {
    let meta: Value = client().get(front.url("/v2/models/yolov5s")).send().unwrap().json().unwrap();
    assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{meta}");
    let ready: Value = client().get(front.url("/readyz")).send().unwrap().json().unwrap();
    assert_eq!(ready["upstreams"]["tensors"]["healthy"], 1, "the OIP health path answers: {ready}");
}

#[test]
fn a_dead_node_costs_no_request_and_no_node_is_a_503() {
    let mut nodes: Vec<Osprey> = (0..2).map(|_| Osprey::start(&node_config(), ANY_PORT)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    let front = Osprey::start(&front_config("failover", &urls, "health_interval_ms = 200"), ANY_PORT);
    let url = front.url("/v1/remote/detect");
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(url.clone(), 2, stop.clone());
    std::thread::sleep(Duration::from_millis(2000));
    nodes[0].kill();
    std::thread::sleep(Duration::from_millis(3000));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<(u16, String)> = running.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(seen.len() >= 4, "the load ran: {} requests", seen.len());
    assert!(failed.is_empty(), "{} of {} requests failed while a node died: {:?}", failed.len(), seen.len(), &failed[..failed.len().min(3)]);

    nodes[1].kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client().post(&url).header("content-type", "image/jpeg").body(fresh_dog()).send().unwrap();
        let retry = resp.headers().get("retry-after").is_some();
        let (status, _, body) = super::read(resp);
        if status == 503 {
            assert_eq!(body["error"]["code"], "no_healthy_node", "{body}");
            assert!(body["error"]["message"].as_str().unwrap().contains("model 'yolov5s' is remote and unavailable"), "{body}");
            assert!(retry, "503 without Retry-After");
            break;
        }
        assert_eq!(status, 502, "a dead node's first request fails as a bad gateway or 503: {body}");
        assert!(Instant::now() < deadline, "the dead nodes never left the pool");
    }
    // No node answers the metadata now: a reload keeps the model it has.
    let resp = client().post(front.url("/admin/reload")).bearer_auth(TOKEN).send().unwrap();
    let (status, _, record) = super::read(resp);
    assert_eq!((status, record["outcome"].as_str()), (200, Some("success")), "{record}");
}

#[test]
fn a_front_whose_remote_model_cannot_be_reached_does_not_start() {
    let dead = format!("http://{}", free_addr());
    let config = front_config("down", std::slice::from_ref(&dead), "");
    let out = std::process::Command::new(osprey_tests::repo().join("target/release/osprey"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started without its model");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("model 'yolov5s' from oip://tensors/yolov5s: GET /v2/models/yolov5s"), "{text}");
    assert!(text.contains(&dead), "the error names the node: {text}");
}
