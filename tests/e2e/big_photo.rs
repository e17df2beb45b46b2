//! A 12 MP phone photo (4032x3024, made by setup from dog.jpg): the host
//! decodes it at a reduced DCT scale for each model, and the answers must be
//! those of a full decode, in the photo's own pixels, whatever its EXIF
//! orientation. `big_photo.toml` puts each model behind a /scaled route (as
//! in the default config) and a /full one (`keep_image`: decoded whole).

use std::sync::OnceLock;

use super::{client, read};
use osprey_tests::TestServer;
use serde_json::Value;

const BIG: &str = "dog-12mp.jpg";
/// The same photo stored turned a quarter, with EXIF orientation 6.
const BIG_TURNED: &str = "dog-12mp-exif6.jpg";
/// dog.jpg is 768 wide, the 12 MP photo 4032: 5.25 times.
const UPSCALE: f64 = 4032.0 / 768.0;

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| osprey_tests::start(&osprey_tests::repo().join("tests/e2e/big_photo.toml")))
}

fn post(path: &str, photo: &str) -> Value {
    let resp = client().post(server().url(path)).header("content-type", "image/jpeg").body(osprey_tests::image(photo)).send().unwrap();
    let (status, answer) = read(resp);
    assert_eq!(status, 200, "{path} {photo}: {answer}");
    answer
}

fn boxes(answer: &Value) -> Vec<(String, f64, [f64; 4])> {
    let as_box = |d: &Value| -> [f64; 4] { std::array::from_fn(|i| d["box"][i].as_f64().unwrap()) };
    answer["detections"].as_array().unwrap().iter().map(|d| (d["label"].as_str().unwrap().to_string(), d["score"].as_f64().unwrap(), as_box(d))).collect()
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let (w, h) = ((a[2].min(b[2]) - a[0].max(b[0])).max(0.0), (a[3].min(b[3]) - a[1].max(b[1])).max(0.0));
    let area = |r: &[f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    w * h / (area(a) + area(b) - w * h)
}

/// Every detection of `want` scoring at least `sure` has one of the same
/// label in `got` (at any score: one near the threshold may fall either
/// side of it) overlapping it by IoU >= `min_iou`, and the reverse. Returns
/// the smallest IoU seen.
fn agree(want: &[(String, f64, [f64; 4])], got: &[(String, f64, [f64; 4])], sure: f64, min_iou: f64, what: &str) -> f64 {
    let mut worst = 1.0f64;
    for (a, b, dir) in [(want, got, "->"), (got, want, "<-")] {
        for (label, score, bx) in a.iter().filter(|d| d.1 >= sure) {
            let best = b.iter().filter(|d| &d.0 == label).map(|d| iou(bx, &d.2)).fold(0.0, f64::max);
            assert!(best >= min_iou, "{what} {dir}: {label} {score:.2} at {bx:?}: best IoU {best:.3} in {b:?}");
            worst = worst.min(best);
        }
    }
    assert!(want.iter().any(|d| d.1 >= sure), "{what}: nothing found at all");
    worst
}

#[test]
fn a_scaled_decode_of_a_12_mp_photo_finds_what_a_full_decode_finds() {
    for (route, sure) in [("detect", 0.35), ("fast", 0.5)] {
        let (scaled, full) = (post(&format!("/scaled/{route}"), BIG), post(&format!("/full/{route}"), BIG));
        for answer in [&scaled, &full] {
            assert_eq!(answer["image"], serde_json::json!({"width": 4032, "height": 3024}), "{answer}");
        }
        let worst = agree(&boxes(&full), &boxes(&scaled), sure, 0.9, route);
        eprintln!("{route}: scaled against full decode of {BIG}: smallest IoU {worst:.3}");
    }
}

#[test]
fn a_scaled_decode_of_a_12_mp_photo_classifies_it_as_a_full_decode_does() {
    let (scaled, full) = (post("/scaled/classify", BIG), post("/full/classify", BIG));
    let top = |a: &serde_json::Value| a["top"].as_array().unwrap().iter().map(|t| (t["class_id"].as_u64().unwrap(), t["score"].as_f64().unwrap())).collect::<Vec<_>>();
    let (s, f) = (top(&scaled), top(&full));
    // The same five classes in the same order. The scores of this uint8
    // model move more: on an AVX2-only AMD EPYC the top one was 0.219
    // scaled against 0.289 in full (within 0.05 on the machine before).
    let ids = |t: &[(u64, f64)]| t.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    assert_eq!(ids(&s), ids(&f), "scaled {scaled}\nfull {full}");
    for ((_, a), (_, b)) in s.iter().zip(&f) {
        assert!((a - b).abs() <= 0.1, "score {a} against {b}\nscaled {scaled}\nfull {full}");
    }
}

#[test]
fn boxes_on_the_12_mp_photo_are_in_its_own_pixels() {
    // The photo is dog.jpg enlarged: its boxes are dog.jpg's, 5.25 times.
    // Boxes left in the reduced decode's pixels would be 4 times too small.
    let small: Vec<_> = boxes(&post("/scaled/detect", "dog.jpg"))
        .into_iter()
        .map(|(l, s, b)| (l, s, b.map(|v| v * UPSCALE)))
        .collect();
    let big = boxes(&post("/scaled/detect", BIG));
    let worst = agree(&small, &big, 0.5, 0.8, "dog.jpg x 5.25 against the 12 MP photo");
    eprintln!("dog.jpg boxes x 5.25 against {BIG}: smallest IoU {worst:.3}");
}

#[test]
fn exif_orientation_holds_when_the_decode_is_scaled() {
    // Stored 3024x4032, tagged to be shown turned: the answer is in the
    // upright photo's pixels, and finds what the upright copy gives.
    for route in ["detect", "fast"] {
        let turned = post(&format!("/scaled/{route}"), BIG_TURNED);
        assert_eq!(turned["image"], serde_json::json!({"width": 4032, "height": 3024}), "{turned}");
        let upright = post(&format!("/scaled/{route}"), BIG);
        let worst = agree(&boxes(&upright), &boxes(&turned), 0.5, 0.9, route);
        eprintln!("{route}: {BIG_TURNED} against {BIG}: smallest IoU {worst:.3}");
    }
}
