//! Photos and attacks shared by the robustness tests and the bench: loading
//! the test photos, JPEG re-encoding, rescaling, and an H.264 round trip
//! through `ffmpeg`.
#![allow(dead_code)] // Each test binary uses a different part.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use image::codecs::jpeg::JpegEncoder;
use image::imageops;
pub use image::imageops::FilterType;
use image::{ImageBuffer, Rgb, RgbImage};

/// The test photos, as fetched by `make models` into the cache.
pub const PHOTOS: [&str; 6] = [
    "dog.jpg",
    "chelsea.png",
    "astronaut.png",
    "coffee.png",
    "horses.jpg",
    "person.jpg",
];

/// An RGB8 image: `width * height * 3` bytes, row by row.
#[derive(Clone)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb8 {
    fn from_image(img: RgbImage) -> Self {
        Rgb8 {
            width: img.width(),
            height: img.height(),
            data: img.into_raw(),
        }
    }

    fn to_image(&self) -> RgbImage {
        ImageBuffer::<Rgb<u8>, _>::from_raw(self.width, self.height, self.data.clone())
            .expect("buffer size matches")
    }
}

/// Where the photos live: `$OSPREY_CACHE/images`, else `~/.cache/osprey/images`.
pub fn photo_dir() -> PathBuf {
    let cache = std::env::var_os("OSPREY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/osprey")
        });
    cache.join("images")
}

/// Loads a test photo, or panics saying how to fetch it.
pub fn photo(name: &str) -> Rgb8 {
    let path = photo_dir().join(name);
    let img = image::open(&path).unwrap_or_else(|e| {
        panic!(
            "test photo {} unreadable: {e} (run `make models` to fetch it)",
            path.display()
        )
    });
    Rgb8::from_image(img.to_rgb8())
}

/// A photo scaled up and cropped to fill `width` x `height` (a video frame).
pub fn frame(name: &str, width: u32, height: u32) -> Rgb8 {
    Rgb8::from_image(cover(&photo(name).to_image(), width, height))
}

/// All six photos tiled 3 x 2 into `width` x `height`, each scaled to cover
/// its tile: a large frame with the detail of native photos, not of one
/// photo blown up.
pub fn mosaic(width: u32, height: u32) -> Rgb8 {
    let mut out = RgbImage::new(width, height);
    for (k, name) in PHOTOS.iter().enumerate() {
        let (col, row) = (k as u32 % 3, k as u32 / 3);
        let (x0, x1) = (width * col / 3, width * (col + 1) / 3);
        let (y0, y1) = (height * row / 2, height * (row + 1) / 2);
        let tile = cover(&photo(name).to_image(), x1 - x0, y1 - y0);
        imageops::replace(&mut out, &tile, i64::from(x0), i64::from(y0));
    }
    Rgb8::from_image(out)
}

/// `img` scaled (bicubic) and centre-cropped to fill `width` x `height`.
fn cover(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let scale = f64::max(
        f64::from(width) / f64::from(img.width()),
        f64::from(height) / f64::from(img.height()),
    );
    let (w, h) = (
        (f64::from(img.width()) * scale).ceil() as u32,
        (f64::from(img.height()) * scale).ceil() as u32,
    );
    let big = imageops::resize(img, w, h, FilterType::CatmullRom);
    let (x, y) = ((w - width) / 2, (h - height) / 2);
    imageops::crop_imm(&big, x, y, width, height).to_image()
}

/// A crop of `img`: the rectangle at `x`, `y` of `width` x `height`.
pub fn crop(img: &Rgb8, x: u32, y: u32, width: u32, height: u32) -> Rgb8 {
    Rgb8::from_image(imageops::crop_imm(&img.to_image(), x, y, width, height).to_image())
}

/// Re-encodes as JPEG at `quality` and decodes again.
pub fn jpeg(img: &Rgb8, quality: u8) -> Rgb8 {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(&img.to_image())
        .expect("JPEG encoding");
    let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .expect("JPEG decoding");
    Rgb8::from_image(decoded.to_rgb8())
}

/// Scales both axes by `factor` (bicubic), as an editor's "resize" would.
pub fn resize(img: &Rgb8, factor: f64) -> Rgb8 {
    resize_by(img, factor, factor, FilterType::CatmullRom)
}

/// Scales the axes by `fx` and `fy` with `filter`.
pub fn resize_by(img: &Rgb8, fx: f64, fy: f64, filter: FilterType) -> Rgb8 {
    let w = (f64::from(img.width) * fx).round() as u32;
    let h = (f64::from(img.height) * fy).round() as u32;
    Rgb8::from_image(imageops::resize(&img.to_image(), w, h, filter))
}

/// Gaussian blur of standard deviation `sigma` pixels.
pub fn blur(img: &Rgb8, sigma: f32) -> Rgb8 {
    Rgb8::from_image(imageops::blur(&img.to_image(), sigma))
}

/// How an H.264 round trip sets its rate.
#[derive(Clone, Copy, Debug)]
pub enum Rate {
    /// Constant rate factor (`-crf`).
    Crf(u8),
    /// Average bitrate in kbit/s for a 1920x1080 frame at 25 fps, scaled by
    /// the frame's pixel count (so a small photo gets the same bits per pixel).
    KbpsAt1080p(u32),
}

/// Encodes `img` as a one-second, 25 fps H.264 clip with libx264 (yuv420p,
/// default preset) and returns the decoded frame at `index`.
///
/// Odd sizes are padded to even ones for 4:2:0 and cropped back after.
pub fn h264(img: &Rgb8, rate: Rate, index: usize) -> Rgb8 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "stego-h264-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let clip = dir.join("clip.mp4");
    let frames = 25;
    let rate_args: Vec<String> = match rate {
        Rate::Crf(crf) => vec!["-crf".into(), crf.to_string()],
        Rate::KbpsAt1080p(kbps) => {
            let pixels = f64::from(img.width) * f64::from(img.height);
            let k = (f64::from(kbps) * pixels / (1920.0 * 1080.0)).round() as u64;
            vec!["-b:v".into(), format!("{k}k")]
        }
    };
    let size = format!("{}x{}", img.width, img.height);
    let mut enc = ffmpeg()
        .args([
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &size, "-r", "25", "-i", "-",
        ])
        .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264"])
        .args(&rate_args)
        .args(["-pix_fmt", "yuv420p"])
        .arg(&clip)
        .stdin(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs (apt-get install ffmpeg)");
    {
        let mut stdin = enc.stdin.take().expect("piped stdin");
        for _ in 0..frames {
            stdin.write_all(&img.data).expect("feeding ffmpeg");
        }
    }
    assert!(
        enc.wait().expect("ffmpeg ran").success(),
        "ffmpeg encode failed"
    );
    let out = ffmpeg()
        .arg("-i")
        .arg(&clip)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdout(Stdio::piped())
        .output()
        .expect("ffmpeg decode runs");
    assert!(out.status.success(), "ffmpeg decode failed");
    let _ = std::fs::remove_dir_all(&dir);
    // The decoded frames have the padded size; crop in here, where the
    // arithmetic is plain (ffmpeg's crop rounds odd sizes for 4:2:0).
    let (w, h) = (img.width as usize, img.height as usize);
    let (pw, ph) = (w.next_multiple_of(2), h.next_multiple_of(2));
    let start = pw * ph * 3 * index;
    assert!(
        out.stdout.len() >= start + pw * ph * 3,
        "decoded clip too short"
    );
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let row = start + y * pw * 3;
        data.extend_from_slice(&out.stdout[row..row + w * 3]);
    }
    Rgb8 {
        width: img.width,
        height: img.height,
        data,
    }
}

fn ffmpeg() -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-threads",
        "2",
    ]);
    cmd
}

/// True when `ffmpeg` can be run.
pub fn have_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// PSNR (dB) between two images of the same size, over all channels.
pub fn psnr(a: &Rgb8, b: &Rgb8) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let se: u64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| {
            let d = i64::from(x) - i64::from(y);
            (d * d) as u64
        })
        .sum();
    stego::mark::psnr(se, a.data.len())
}
