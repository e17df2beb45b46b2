//! `/v1/stego/embed` and `/v1/stego/check`: a 32-bit ID hidden in a photo,
//! invisible, found again after the photo is recompressed.

use super::{client, post, read};
use image::RgbImage;

fn embed(photo: Vec<u8>, id: u64) -> Vec<u8> {
    let server = osprey_tests::default_server();
    let resp = client().post(server.url(&format!("/v1/stego/embed?id={id}"))).header("content-type", "image/png").body(photo).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text());
    assert_eq!(resp.headers()["content-type"], "image/png");
    resp.bytes().unwrap().to_vec()
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let mse = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>() / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(img).unwrap();
    out
}

#[test]
fn an_embedded_id_is_invisible_and_found_again_after_jpeg() {
    let photo = osprey_tests::image("astronaut.png");
    let id = 3_141_592_653u64;
    let marked = embed(photo.clone(), id);
    let (original, marked_img) = (image::load_from_memory(&photo).unwrap().to_rgb8(), image::load_from_memory(&marked).unwrap().to_rgb8());
    assert_eq!(original.dimensions(), marked_img.dimensions());
    let p = psnr(&original, &marked_img);
    assert!(p >= 38.0, "PSNR {p:.1} dB");
    for (bytes, what) in [(marked.clone(), "png"), (jpeg(&marked_img, 60), "jpeg 60")] {
        let (status, answer) = post("/v1/stego/check", "image/jpeg", bytes);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["watermark"]["found"], true, "{what}: {answer}");
        assert_eq!(answer["watermark"]["id"].as_u64(), Some(id), "{what}: {answer}");
    }
}

#[test]
fn unmarked_photos_carry_no_mark() {
    for name in ["dog.jpg", "chelsea.png", "horses.jpg", "coffee.png"] {
        let (status, answer) = post("/v1/stego/check", "image/jpeg", osprey_tests::image(name));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["watermark"]["found"], false, "{name}: {answer}");
    }
}

#[test]
fn embed_needs_an_id_within_32_bits() {
    let server = osprey_tests::default_server();
    for (query, want) in [("", "required"), ("?id=4294967296", "outside"), ("?id=-1", "outside"), ("?id=1.5", "whole")] {
        let resp = client().post(server.url(&format!("/v1/stego/embed{query}"))).header("content-type", "image/jpeg").body(osprey_tests::image("dog.jpg")).send().unwrap();
        let (status, body) = read(resp);
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_param")), "{query}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(want), "{query}: {body}");
    }
}
