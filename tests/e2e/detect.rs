//! The three default routes on real photos: what they find and where.

use super::{best, client, labels, post, read};
use serde_json::Value;

fn center(d: &Value) -> (f64, f64) {
    let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)
}

fn assert_boxes_inside(answer: &Value) {
    let (w, h) = (answer["image"]["width"].as_f64().unwrap(), answer["image"]["height"].as_f64().unwrap());
    let mut last = f64::INFINITY;
    for d in answer["detections"].as_array().unwrap() {
        let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(0.0 <= b[0] && b[0] < b[2] && b[2] <= w && 0.0 <= b[1] && b[1] < b[3] && b[3] <= h, "box {b:?} in {w}x{h}");
        let score = d["score"].as_f64().unwrap();
        assert!(score <= last, "detections are sorted by score");
        last = score;
    }
}

#[test]
fn yolo_finds_dog_bicycle_and_truck_in_dog_jpg() {
    let (status, answer) = post("/v1/detect", "image/jpeg", osprey_tests::image("dog.jpg"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "yolov5s");
    assert_eq!(answer["image"], serde_json::json!({"width": 768, "height": 576}));
    let found = labels(&answer);
    for want in ["dog", "bicycle"] {
        assert!(found.contains(&want.to_string()), "{want} not in {found:?}");
    }
    assert!(found.iter().any(|l| l == "truck" || l == "car"), "no truck/car in {found:?}");
    assert_boxes_inside(&answer);
    // Where they are in the photo: the dog sits bottom left, the truck top right.
    let (dx, dy) = center(best(&answer, "dog"));
    assert!(dx < 384.0 && dy > 288.0, "dog centre ({dx}, {dy})");
    assert!(best(&answer, "dog")["score"].as_f64().unwrap() > 0.6);
    let vehicle = answer["detections"].as_array().unwrap().iter().find(|d| d["label"] == "truck" || d["label"] == "car").unwrap();
    let (tx, ty) = center(vehicle);
    assert!(tx > 384.0 && ty < 288.0, "truck centre ({tx}, {ty})");
    assert!(answer["detections"][0]["class_id"].as_u64().is_some());
    assert!(answer["timing_ms"]["inference"].as_f64().unwrap() > 0.0);
    assert!(answer["timing_ms"]["total"].as_f64().unwrap() >= answer["timing_ms"]["inference"].as_f64().unwrap());
}

#[test]
fn both_detectors_find_the_cat_in_chelsea_png() {
    for route in ["/v1/detect", "/v1/detect/fast"] {
        let (status, answer) = post(route, "image/png", osprey_tests::image("chelsea.png"));
        assert_eq!(status, 200, "{route}: {answer}");
        assert_eq!(labels(&answer).first().map(String::as_str), Some("cat"), "{route}: {answer}");
        assert_boxes_inside(&answer);
    }
}

#[test]
fn classifier_puts_a_cat_first_for_chelsea_png() {
    let (status, answer) = post("/v1/classify", "image/png", osprey_tests::image("chelsea.png"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "efficientnet_lite3");
    let top = answer["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let first = &top[0];
    // ImageNet's domestic cats are classes 281..=285 (tabby .. Egyptian cat).
    let id = first["class_id"].as_u64().unwrap();
    assert!((281..=285).contains(&id), "top class {first}");
    assert!(first["label"].as_str().unwrap().to_lowercase().contains("cat") || first["label"] == "tabby", "{first}");
}

#[test]
fn multipart_upload_gives_the_same_answer() {
    let server = osprey_tests::default_server();
    let part = reqwest::blocking::multipart::Part::bytes(osprey_tests::image("chelsea.png")).file_name("chelsea.png").mime_str("image/png").unwrap();
    let form = reqwest::blocking::multipart::Form::new().text("note", "hello").part("image", part);
    let (status, answer) = read(client().post(server.url("/v1/classify")).multipart(form).send().unwrap());
    assert_eq!(status, 200, "{answer}");
    let (_, raw) = post("/v1/classify", "image/png", osprey_tests::image("chelsea.png"));
    assert_eq!(answer["top"], raw["top"]);
}

#[test]
fn query_parameters_override_settings_within_bounds() {
    let img = osprey_tests::image("dog.jpg");
    let (_, loose) = post("/v1/detect?conf=0.1", "image/jpeg", img.clone());
    let (_, strict) = post("/v1/detect?conf=0.8", "image/jpeg", img.clone());
    let (n_loose, n_strict) = (labels(&loose).len(), labels(&strict).len());
    assert!(n_strict < n_loose, "conf=0.8 gave {n_strict}, conf=0.1 gave {n_loose}");
    assert!(strict["detections"].as_array().unwrap().iter().all(|d| d["score"].as_f64().unwrap() >= 0.8));
    let (_, top2) = post("/v1/classify?top=2", "image/png", osprey_tests::image("chelsea.png"));
    assert_eq!(top2["top"].as_array().unwrap().len(), 2);

    let (status, err) = post("/v1/detect?conf=5", "image/jpeg", img.clone());
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("bad_param")), "{err}");
    let (status, err) = post("/v1/detect?colour=red", "image/jpeg", img);
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("conf, iou"), "{err}");
}

#[test]
fn health_and_readiness() {
    let server = osprey_tests::default_server();
    let (status, alive) = read(client().get(server.url("/healthz")).send().unwrap());
    assert_eq!((status, alive["status"].as_str()), (200, Some("alive")));
    let (status, ready) = read(client().get(server.url("/readyz")).send().unwrap());
    assert_eq!(status, 200);
    assert_eq!(ready["models"].as_array().unwrap().len(), 3, "{ready}");
    assert_eq!(ready["plugins"].as_array().unwrap().len(), 8, "{ready}");
}
