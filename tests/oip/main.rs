//! The Open Inference Protocol end to end: Triton's own Python client,
//! unchanged, drives the real server on the real models and checks every
//! answer against ONNX Runtime (tests/oip/triton_client.py); the rest are
//! the protocol's edges a stock client does not reach.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// This checkout: the script, the Makefile and the models beside this test
/// (taken from this binary's own build, not the shared harness's).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The venv `make test-deps` builds: tritonclient[http], numpy, onnxruntime, pillow.
fn test_python() -> PathBuf {
    let repo = repo();
    // Idempotent (a stamp file): a no-op once the venv exists.
    let made = Command::new("make").args(["-s", "-C"]).arg(&repo).arg("test-deps").output().expect("run make");
    assert!(
        made.status.success(),
        "`make test-deps` failed:\n{}{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    osprey::nn::runtime::cache_dir().join("venv-test/bin/python")
}

#[test]
fn tritonclient_drives_every_model_in_binary_and_json() {
    let python = test_python();
    let server = osprey_tests::default_server();
    let repo = repo();
    let image = osprey::nn::runtime::cache_dir().join("images/chelsea.png");
    let out = Command::new(&python)
        .arg(repo.join("tests/oip/triton_client.py"))
        .arg("--url")
        .arg(server.addr.to_string())
        .arg("--repo")
        .arg(&repo)
        .arg("--image")
        .arg(&image)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the tritonclient script failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
    println!("{stdout}");
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap()
}

fn post_json(path: &str, body: &Value) -> (u16, Value) {
    let resp = client().post(osprey_tests::default_server().url(path)).json(body).send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

/// One EfficientNet request in JSON, its image given as `data`.
fn classify(data: Value) -> (u16, Value) {
    let request = json!({"inputs": [{"name": "images", "shape": [1, 280, 280, 3], "datatype": "UINT8", "data": data}]});
    post_json("/v2/models/efficientnet_lite3/infer", &request)
}

#[test]
fn nested_json_data_answers_as_flat_data_does() {
    let pixel = |i: usize| (i * 7 % 256) as u64;
    let flat: Vec<u64> = (0..280 * 280 * 3).map(pixel).collect();
    let nested: Vec<Vec<Vec<u64>>> =
        (0..280).map(|y| (0..280).map(|x| (0..3).map(|c| pixel((y * 280 + x) * 3 + c)).collect()).collect()).collect();
    let (s1, a) = classify(json!(flat));
    let (s2, b) = classify(json!([nested]));
    assert_eq!((s1, s2), (200, 200), "{a}\n{b}");
    assert_eq!(a["outputs"][0]["shape"], json!([1, 1000]));
    assert_eq!(a["outputs"][0]["datatype"], "UINT8");
    assert_eq!(a["outputs"], b["outputs"]);
}

#[test]
fn a_body_over_the_limit_is_413_in_the_protocols_error_format() {
    let limit = osprey_tests::default_server().shared.snapshot.load().config.server.max_body_bytes;
    let resp = client()
        .post(osprey_tests::default_server().url("/v2/models/yolov5s/infer"))
        .header("inference-header-content-length", "2")
        .body(vec![b' '; limit + 1])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("max_body_bytes"), "{body}");
}

#[test]
fn protocol_edges_answer_with_status_and_message() {
    let (status, body) = post_json("/v2/models/efficientnet_lite3/infer", &json!({"inputs": "no"}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = classify(json!([1, 2, 3]));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("input 'images'"), "{body}");
    let request = json!({"inputs": [{"name": "pixels", "shape": [1], "datatype": "UINT8", "data": [1]}]});
    let (status, body) = post_json("/v2/models/efficientnet_lite3/infer", &request);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("'images'"), "the message names the real input: {body}");
    let resp = client().get(osprey_tests::default_server().url("/v2/models/efficientnet_lite3/infer")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = client().get(osprey_tests::default_server().url("/v2/models/yolov5s/explain")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
