//! The watermark on the real test photos: invisible enough (PSNR), found
//! after JPEG, rescaling and H.264, and not found where there is none.
//!
//! Needs the photos of `make models` (in `$OSPREY_CACHE/images`) and, for
//! the H.264 test, `ffmpeg` with libx264 (`make test-services` installs it).

mod common;

use common::{h264, have_ffmpeg, jpeg, mosaic, photo, resize, Rate, Rgb8, PHOTOS};
use stego::mark::{self, DEFAULT_KEY, DEFAULT_STRENGTH};

/// `img` with `id` embedded under the default key and strength.
fn marked(img: &Rgb8, id: u32) -> Rgb8 {
    let mut out = img.clone();
    let done = mark::embed(
        &mut out.data,
        out.width,
        out.height,
        id,
        DEFAULT_STRENGTH,
        DEFAULT_KEY,
    );
    assert!(
        done.psnr_db >= 38.0,
        "PSNR {:.2} dB is under 38",
        done.psnr_db
    );
    assert!((common::psnr(img, &out) - done.psnr_db).abs() < 1e-9);
    out
}

/// An ID per photo, different bits set in each.
fn id_for(k: usize) -> u32 {
    0x9E37_79B9u32.wrapping_mul(k as u32 + 1) ^ 0x5A5A_0F0F
}

/// Asserts that `img` carries `id`; `what` names the case in the message.
fn assert_reads(img: &Rgb8, id: u32, what: &str) {
    let c = mark::check(&img.data, img.width, img.height, DEFAULT_KEY);
    assert!(
        c.found && c.id == Some(id),
        "{what}: expected {id}, got {c:?}"
    );
}

#[test]
fn marks_are_invisible_and_read_back_from_every_photo() {
    for (k, name) in PHOTOS.iter().enumerate() {
        let m = marked(&photo(name), id_for(k));
        assert_reads(&m, id_for(k), name);
    }
}

#[test]
fn marks_survive_jpeg_50_and_95() {
    for (k, name) in PHOTOS.iter().enumerate() {
        let m = marked(&photo(name), id_for(k));
        for quality in [95, 50] {
            assert_reads(
                &jpeg(&m, quality),
                id_for(k),
                &format!("{name}, JPEG {quality}"),
            );
        }
    }
}

#[test]
fn marks_survive_resizing_by_20_percent_either_way() {
    for (k, name) in PHOTOS.iter().enumerate() {
        let m = marked(&photo(name), id_for(k));
        for factor in [0.8, 1.2] {
            let r = resize(&m, factor);
            assert_ne!((r.width, r.height), (m.width, m.height));
            assert_reads(&r, id_for(k), &format!("{name}, resized x{factor}"));
        }
    }
}

#[test]
fn marks_survive_resizing_then_jpeg() {
    let m = marked(&photo("person.jpg"), 4_000_000_001);
    assert_reads(
        &jpeg(&resize(&m, 0.8), 75),
        4_000_000_001,
        "x0.8 then JPEG 75",
    );
}

#[test]
fn marks_survive_h264() {
    if !have_ffmpeg() {
        eprintln!("SKIPPED: ffmpeg not on PATH (apt-get install ffmpeg)");
        return;
    }
    // A 1080p frame with the detail of native photos, at 2 Mbit/s; and two
    // photos at their own (odd) sizes, with the same bits per pixel.
    let frame = marked(&mosaic(1920, 1080), 1_234_567);
    assert_reads(
        &h264(&frame, Rate::KbpsAt1080p(2000), 12),
        1_234_567,
        "1080p at 2 Mbit/s",
    );
    for (name, id) in [("chelsea.png", 7), ("horses.jpg", 0xFFFF_FFFF)] {
        let m = marked(&photo(name), id);
        for rate in [Rate::Crf(23), Rate::KbpsAt1080p(2000)] {
            assert_reads(&h264(&m, rate, 12), id, &format!("{name}, H.264 {rate:?}"));
        }
    }
}

#[test]
fn unmarked_photos_are_not_flagged() {
    for name in PHOTOS {
        let img = photo(name);
        for variant in [img.clone(), resize(&img, 0.8), jpeg(&img, 75)] {
            let observed = mark::observe(&variant.data, variant.width, variant.height);
            for key in (0..50).map(|k| DEFAULT_KEY ^ k) {
                let c = mark::check_observed(&observed, key);
                assert!(!c.found && c.id.is_none(), "{name}, key {key:#x}: {c:?}");
            }
        }
    }
}

#[test]
fn a_mark_is_only_read_with_its_key() {
    let m = marked(&photo("dog.jpg"), 99);
    for key in 1..50 {
        let c = mark::check(&m.data, m.width, m.height, DEFAULT_KEY ^ key);
        assert!(!c.found, "key {key}: {c:?}");
    }
}
