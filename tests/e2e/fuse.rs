//! `/v1/fuse` and `/v1/fuse/wbf`: two images (visible, infrared), each through
//! /v1/detect, merged by the `fusion` plugin.

use super::{client, post, read};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;

fn form(visible: Vec<u8>, infrared: Vec<u8>) -> Form {
    Form::new()
        .part("visible", Part::bytes(visible).mime_str("image/jpeg").unwrap())
        .part("infrared", Part::bytes(infrared).mime_str("image/jpeg").unwrap())
}

fn fuse(path: &str, visible: Vec<u8>, infrared: Vec<u8>) -> (u16, Value) {
    let server = osprey_tests::default_server();
    read(client().post(server.url(path)).multipart(form(visible, infrared)).send().unwrap())
}

/// A stand-in for a thermal camera's frame of the same scene: the photo's
/// luminance, inverted in contrast and blurred (what the test has; no real
/// paired infrared data ships with the repository).
fn infrared_of(jpeg: &[u8]) -> Vec<u8> {
    let gray = image::load_from_memory(jpeg).unwrap().to_luma8();
    let blurred = image::imageops::blur(&gray, 1.5);
    let mut out = Vec::new();
    image::DynamicImage::ImageLuma8(blurred).to_rgb8().write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    out
}

fn boxes(answer: &Value) -> Vec<[f64; 4]> {
    answer["detections"].as_array().unwrap().iter().map(|d| {
        let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        [b[0], b[1], b[2], b[3]]
    }).collect()
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

fn sources(d: &Value) -> Vec<&str> {
    d["sources"].as_array().map(|s| s.iter().map(|v| v.as_str().unwrap()).collect()).unwrap_or_default()
}

#[test]
fn the_seed_rule_keeps_every_visible_box_and_adds_only_new_infrared_ones() {
    let visible = osprey_tests::image("dog.jpg");
    let infrared = osprey_tests::image("horses.jpg");
    let (_, vis) = post("/v1/detect", "image/jpeg", visible.clone());
    let (_, inf) = post("/v1/detect", "image/jpeg", infrared.clone());
    let (status, fused) = fuse("/v1/fuse", visible, infrared);
    assert_eq!(status, 200, "{fused}");
    let dets = fused["detections"].as_array().unwrap();
    let from_visible: Vec<&Value> = dets.iter().filter(|d| sources(d).contains(&"visible")).collect();
    assert_eq!(from_visible.len(), vis["detections"].as_array().unwrap().len(), "every visible box is kept: {fused}");
    let vis_boxes = boxes(&vis);
    let mut added = 0;
    for d in dets.iter().filter(|d| sources(d) == ["infrared"]) {
        let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let best = vis_boxes.iter().map(|v| iou(v, &[b[0], b[1], b[2], b[3]])).fold(0.0, f64::max);
        assert!(best <= 0.75 + 1e-3, "an added infrared box overlaps a visible one by {best}");
        added += 1;
    }
    // horses.jpg's horses lie where dog.jpg has no box of their size: some are added.
    assert!(added >= 1 && added <= inf["detections"].as_array().unwrap().len(), "{added} added: {fused}");
    // Lowering the threshold to 0 adds only boxes that touch no visible box.
    let (_, strict) = fuse("/v1/fuse?iou_thr=0", osprey_tests::image("dog.jpg"), osprey_tests::image("horses.jpg"));
    for d in strict["detections"].as_array().unwrap().iter().filter(|d| sources(d) == ["infrared"]) {
        let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(vis_boxes.iter().all(|v| iou(v, &[b[0], b[1], b[2], b[3]]) == 0.0));
    }
}

#[test]
fn wbf_merges_the_boxes_both_cameras_see() {
    let visible = osprey_tests::image("dog.jpg");
    let (status, fused) = fuse("/v1/fuse/wbf", visible.clone(), infrared_of(&visible));
    assert_eq!(status, 200, "{fused}");
    let dets = fused["detections"].as_array().unwrap();
    let dog = dets.iter().find(|d| d["label"] == "dog").unwrap_or_else(|| panic!("no dog: {fused}"));
    let mut seen = sources(dog);
    seen.sort();
    assert_eq!(seen, ["infrared", "visible"], "the dog is seen by both: {dog}");
    assert_eq!(fused["image"], serde_json::json!({"width": 768, "height": 576}));
    let mut last = f64::INFINITY;
    for d in dets {
        let s = d["score"].as_f64().unwrap();
        assert!(s <= last + 1e-9 && s > 0.0 && s <= 1.0);
        last = s;
    }
}

#[test]
fn fusion_needs_both_fields_of_a_form() {
    let server = osprey_tests::default_server();
    let only = Form::new().part("visible", Part::bytes(osprey_tests::image("dog.jpg")).mime_str("image/jpeg").unwrap());
    let (status, body) = read(client().post(server.url("/v1/fuse")).multipart(only).send().unwrap());
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_form");
    assert!(body["error"]["message"].as_str().unwrap().contains("'infrared'"), "{body}");
    let (status, body) = post("/v1/fuse", "image/jpeg", osprey_tests::image("dog.jpg"));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_form")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("visible"), "{body}");
}
