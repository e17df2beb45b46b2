//! Bad requests get a precise 4xx, and the server keeps answering everyone else.

use super::{client, post, read};

/// After each bad request a good one must still succeed.
fn still_serving() {
    let (status, answer) = post("/v1/detect/fast", "image/png", osprey_tests::image("chelsea.png"));
    assert_eq!(status, 200, "a good request after a bad one: {answer}");
}

fn expect(status: u16, code: &str, got: (u16, serde_json::Value)) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(!got.1["error"]["message"].as_str().unwrap().is_empty());
    still_serving();
}

#[test]
fn empty_body_is_400() {
    expect(400, "empty_body", post("/v1/detect", "image/jpeg", Vec::new()));
}

#[test]
fn truncated_jpeg_is_400_bad_image() {
    let mut jpeg = osprey_tests::image("dog.jpg");
    jpeg.truncate(jpeg.len() / 2);
    expect(400, "bad_image", post("/v1/detect", "image/jpeg", jpeg));
}

#[test]
fn text_file_is_415() {
    let text = b"this is not an image, just some text\n".repeat(20);
    expect(415, "unsupported_media_type", post("/v1/detect", "text/plain", text.clone()));
    // Declared as an image, the bytes still are not one.
    expect(415, "unsupported_media_type", post("/v1/classify", "image/jpeg", text));
}

#[test]
fn png_claiming_30000_by_30000_is_413_before_decoding() {
    expect(413, "too_large", post("/v1/detect", "image/png", huge_png_header(30000, 30000)));
}

#[test]
fn body_over_the_limit_is_413() {
    expect(413, "too_large", post("/v1/detect", "image/jpeg", vec![0xff; 21 << 20]));
}

#[test]
fn unknown_path_is_404_and_wrong_method_is_405() {
    let server = osprey_tests::default_server();
    let (status, err) = read(client().post(server.url("/v1/nothing")).body("x").send().unwrap());
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("not_found")));
    let resp = client().get(server.url("/v1/detect")).send().unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    let (status, err) = read(resp);
    assert_eq!((status, err["error"]["code"].as_str()), (405, Some("method_not_allowed")));
}

#[test]
fn many_bad_and_good_requests_at_once() {
    let server = osprey_tests::default_server();
    let good = osprey_tests::image("chelsea.png");
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (url, good) = (server.url("/v1/detect/fast"), good.clone());
            std::thread::spawn(move || {
                let body = if i % 2 == 0 { good } else { good[..good.len() / 3].to_vec() };
                let status = client().post(url).header("content-type", "image/png").body(body).send().unwrap().status().as_u16();
                (i, status)
            })
        })
        .collect();
    for t in threads {
        let (i, status) = t.join().unwrap();
        assert_eq!(status, if i % 2 == 0 { 200 } else { 400 }, "request {i}");
    }
}

/// A PNG signature and an IHDR chunk that claims `w`x`h`, with no pixel data.
fn huge_png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
