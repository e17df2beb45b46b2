//! `Accept: image/jpeg` (or `?render=`) on a detection route: the annotated
//! image, drawn by the `render` plugin, instead of JSON.

use super::{client, post};
use image::RgbImage;

fn decode(bytes: &[u8]) -> RgbImage {
    image::load_from_memory(bytes).expect("an image").to_rgb8()
}

/// Mean absolute difference of two same-size images inside a rectangle.
fn diff(a: &RgbImage, b: &RgbImage, (x1, y1, x2, y2): (u32, u32, u32, u32)) -> f64 {
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in y1..y2 {
        for x in x1..x2 {
            for c in 0..3 {
                sum += u64::from(a.get_pixel(x, y)[c].abs_diff(b.get_pixel(x, y)[c]));
            }
            n += 3;
        }
    }
    sum as f64 / n as f64
}

fn boxes(answer: &serde_json::Value) -> Vec<[f64; 4]> {
    let list = answer["detections"].as_array().unwrap();
    list.iter().map(|d| {
        let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        [b[0], b[1], b[2], b[3]]
    }).collect()
}

#[test]
fn accept_image_jpeg_returns_the_photo_with_its_boxes_drawn() {
    let server = osprey_tests::default_server();
    let photo = osprey_tests::image("dog.jpg");
    let (_, answer) = post("/v1/detect", "image/jpeg", photo.clone());
    let resp = client().post(server.url("/v1/detect")).header("content-type", "image/jpeg").header("accept", "image/jpeg").body(photo.clone()).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert_eq!(resp.headers()["x-osprey-cache"], "miss", "rendered images are not cached");
    let drawn = decode(&resp.bytes().unwrap());
    let original = decode(&photo);
    assert_eq!(drawn.dimensions(), original.dimensions());
    // Along the top edge of every box the picture changed (the outline) ...
    for [x1, y1, x2, _] in boxes(&answer) {
        let (x1, x2, y1) = (x1.max(0.0) as u32, (x2 as u32).min(original.width() - 1), (y1.max(2.0) as u32).min(original.height() - 3));
        let edge = diff(&drawn, &original, (x1, y1.saturating_sub(1), x2.max(x1 + 1), y1 + 2));
        assert!(edge > 20.0, "box edge at y={y1} barely changed: {edge:.1}");
    }
    // ... while far from the boxes only JPEG noise differs.
    let all = boxes(&answer);
    let (w, h) = original.dimensions();
    let quiet = (0..h / 16).flat_map(|gy| (0..w / 16).map(move |gx| (gx * 16, gy * 16))).find(|&(x, y)| {
        all.iter().all(|b| (x as f64) + 16.0 < b[0] - 60.0 || x as f64 > b[2] + 20.0 || (y as f64) + 16.0 < b[1] - 60.0 || y as f64 > b[3] + 20.0)
    });
    if let Some((x, y)) = quiet {
        let noise = diff(&drawn, &original, (x, y, x + 16, y + 16));
        assert!(noise < 6.0, "untouched area at ({x},{y}) changed by {noise:.1}");
    }
}

#[test]
fn render_query_gives_png_on_the_fast_route_and_a_panel_on_classify() {
    let server = osprey_tests::default_server();
    let photo = osprey_tests::image("chelsea.png");
    let resp = client().post(server.url("/v1/detect/fast?render=png&conf=0.3")).header("content-type", "image/png").body(photo.clone()).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let drawn = decode(&resp.bytes().unwrap());
    let original = decode(&photo);
    assert_eq!(drawn.dimensions(), original.dimensions());
    assert!(diff(&drawn, &original, (0, 0, drawn.width(), drawn.height())) > 0.5, "something was drawn");

    let resp = client().post(server.url("/v1/classify?render=png")).header("content-type", "image/png").body(photo.clone()).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let drawn = decode(&resp.bytes().unwrap());
    let (w, h) = drawn.dimensions();
    let (top_left, bottom_right) = (diff(&drawn, &original, (0, 0, w / 3, h / 3)), diff(&drawn, &original, (2 * w / 3, 2 * h / 3, w, h)));
    assert!(top_left > 5.0 && bottom_right < 1.0, "classes drawn in a corner panel: {top_left:.1} vs {bottom_right:.1}");
}

#[test]
fn render_requests_that_cannot_be_met_are_refused() {
    let server = osprey_tests::default_server();
    let photo = osprey_tests::image("dog.jpg");
    let resp = client().post(server.url("/v1/detect?render=gif")).header("content-type", "image/jpeg").body(photo.clone()).send().unwrap();
    let (status, body) = super::read(resp);
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_param")), "{body}");
    // A client that takes only images, on a route that answers JSON only.
    let resp = client().post(server.url("/v1/stego/check")).header("content-type", "image/jpeg").header("accept", "image/png").body(photo).send().unwrap();
    let (status, body) = super::read(resp);
    assert_eq!((status, body["error"]["code"].as_str()), (406, Some("not_acceptable")), "{body}");
}

/// `x-osprey-chain` once listed `render@...` on JSON answers too, naming a
/// stage that did not run: it names render only when render drew the answer.
#[test]
fn the_chain_header_names_render_only_when_it_ran() {
    let server = osprey_tests::default_server();
    let photo = osprey_tests::image("dog.jpg");
    let chain = |accept: &str| {
        let resp = client().post(server.url("/v1/detect")).header("content-type", "image/jpeg").header("accept", accept).body(photo.clone()).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.headers()["x-osprey-chain"].to_str().unwrap().to_string()
    };
    let json = chain("application/json");
    let drawn = chain("image/jpeg");
    assert!(!json.contains("render@"), "a JSON answer names render: {json}");
    assert!(drawn.contains("render@"), "a drawn answer does not name render: {drawn}");
    assert!(drawn.starts_with(&json), "the drawn chain {drawn} is the JSON chain {json} plus render");
}
