//! End-to-end tests: the real server, the real models, real photos, over HTTP.

mod abuse;
mod admission;
mod bad_input;
mod big_photo;
mod client;
mod redis;
mod detect;
mod fuse;
mod hostile;
mod policy;
mod render;
mod stego;
mod sandbox;
mod serving;
mod shutdown;
mod video;
mod zones;

use reqwest::blocking::{Client, Response};
use serde_json::Value;

pub fn client() -> Client {
    Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap()
}

/// POSTs raw bytes with a content type; returns status and JSON body.
pub fn post(path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let server = osprey_tests::default_server();
    let resp = client().post(server.url(path)).header("content-type", content_type).body(body).send().unwrap();
    read(resp)
}

pub fn read(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

/// Labels of the detections in an answer, highest score first.
pub fn labels(answer: &Value) -> Vec<String> {
    answer["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap().to_string()).collect()
}

/// The best detection with this label.
pub fn best<'a>(answer: &'a Value, label: &str) -> &'a Value {
    answer["detections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == label)
        .unwrap_or_else(|| panic!("no {label} in {answer}"))
}
