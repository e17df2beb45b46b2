//! Hostile uploads (issue 16, item 2): decompression bombs under the pixel
//! limit, JPEGs whose scans claim more than their header, forms of 10,000
//! parts or one endless header line, JSON nested 100,000 deep, shapes whose
//! product overflows, playlists posing as videos, a stream claiming
//! 100000x100000. Each is answered quickly and precisely, and eight of them
//! at once keep the server's peak memory under a stated bound while a
//! well-behaved client is served.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flate2::write::ZlibEncoder;
use serde_json::Value;

use super::{client, read};

/// Loose: a loaded 2-core CI machine answers every one of these well inside it.
const QUICK: Duration = Duration::from_secs(10);

/// POSTs `body` to `path` of the shared server; the answer and how long it took.
fn timed_post(path: &str, content_type: &str, body: Vec<u8>) -> ((u16, Value), Duration) {
    let url = osprey_tests::default_server().url(path);
    let start = Instant::now();
    let got = read(client().post(url).header("content-type", content_type).body(body).send().unwrap());
    (got, start.elapsed())
}

fn expect(got: ((u16, Value), Duration), status: u16, code: &str) -> String {
    let ((got_status, answer), took) = got;
    assert_eq!(got_status, status, "{answer}");
    assert_eq!(answer["error"]["code"], code, "{answer}");
    assert!(took < QUICK, "answered in {took:?}: {answer}");
    answer["error"]["message"].as_str().unwrap().to_string()
}

/// A PNG of `w`x`h` whose IDAT inflates to `inflated` bytes of zeros
/// (whatever the header needs: more is a bomb in the stream, not in the size).
fn png_of_zeros(w: u32, h: u32, bit_depth: u8, color: u8, inflated: usize) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    let mut left = inflated;
    while left > 0 {
        let n = left.min(chunk.len());
        z.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    let idat = z.finish().unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, color, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &idat), (b"IEND", &[])] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc.sum().to_be_bytes());
    }
    png
}

/// 6000x6000 (36 M pixels, under the 40 M limit), 16-bit RGBA: 288 MB once
/// inflated, from a ~280 KB upload.
fn png_bomb() -> &'static [u8] {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| png_of_zeros(6000, 6000, 16, 6, 6000 * (1 + 6000 * 8)))
}

/// A 64x64 PNG whose IDAT goes on to 256 MB of zeros past the image.
fn png_long_idat() -> &'static [u8] {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| png_of_zeros(64, 64, 8, 2, 256 << 20))
}

/// A lossless WebP of 6000x6000 black pixels: a few KB that decode to 144 MB of RGBA.
fn webp_bomb() -> &'static [u8] {
    static WEBP: OnceLock<Vec<u8>> = OnceLock::new();
    WEBP.get_or_init(|| {
        let black = vec![0u8; 6000 * 6000 * 3];
        let mut out = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut out).encode(&black, 6000, 6000, image::ExtendedColorType::Rgb8).unwrap();
        out
    })
}

/// A baseline JPEG of 1024x1024 noise whose frame header says 64x48: the
/// scan carries 300 times the blocks the header claims.
fn jpeg_scan_longer_than_header() -> Vec<u8> {
    let noise: Vec<u8> = (0..1024 * 1024 * 3u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode(&noise, 1024, 1024, image::ExtendedColorType::Rgb8).unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline frame header");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0, 48, 0, 64]);
    jpeg
}

/// A progressive grayscale JPEG of 4096x4096 with 3,000 DC scans of a few
/// bytes each: every scan is a pass over 262,144 blocks for a decoder that
/// pads a short scan with zeros (the libjpeg "scan bomb").
fn jpeg_many_scans() -> Vec<u8> {
    let mut j = vec![0xff, 0xd8];
    j.extend_from_slice(&[0xff, 0xdb, 0, 67, 0]);
    j.extend_from_slice(&[1; 64]);
    j.extend_from_slice(&[0xff, 0xc2, 0, 11, 8, 0x10, 0, 0x10, 0, 1, 1, 0x11, 0]);
    // DC table 0: one code of one bit, for category 0 (a difference of 0).
    j.extend_from_slice(&[0xff, 0xc4, 0, 20, 0x00, 1]);
    j.extend_from_slice(&[0; 15]);
    j.push(0);
    for _ in 0..3000 {
        j.extend_from_slice(&[0xff, 0xda, 0, 8, 1, 1, 0x00, 0, 0, 0]);
        j.extend_from_slice(&[0; 8]);
    }
    j.extend_from_slice(&[0xff, 0xd9]);
    j
}

#[test]
fn png_bomb_under_the_pixel_limit_is_answered_with_memory_bounded() {
    let ((status, answer), took) = timed_post("/v1/detect/fast", "image/png", png_bomb().to_vec());
    // A valid (black) image: a 413 for its decoded size, or an answer with nothing in it.
    assert!(status == 413 || (status == 200 && answer["detections"] == serde_json::json!([])), "{status} {answer}");
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn png_whose_idat_goes_on_past_the_image_is_answered_at_its_header_size() {
    let ((status, answer), took) = timed_post("/v1/detect/fast", "image/png", png_long_idat().to_vec());
    assert!(status == 200 || (status == 400 && answer["error"]["code"] == "bad_image"), "{status} {answer}");
    if status == 200 {
        assert_eq!((answer["image"]["width"].as_u64(), answer["image"]["height"].as_u64()), (Some(64), Some(64)), "{answer}");
    }
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn webp_bomb_under_the_pixel_limit_is_answered_with_memory_bounded() {
    let ((status, answer), took) = timed_post("/v1/detect/fast", "image/webp", webp_bomb().to_vec());
    assert!(status == 413 || (status == 200 && answer["detections"] == serde_json::json!([])), "{status} {answer}");
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn jpeg_whose_scan_is_longer_than_its_header_is_answered_at_its_header_size() {
    let ((status, answer), took) = timed_post("/v1/detect/fast", "image/jpeg", jpeg_scan_longer_than_header());
    assert!(status == 200 || (status == 400 && answer["error"]["code"] == "bad_image"), "{status} {answer}");
    if status == 200 {
        assert_eq!((answer["image"]["width"].as_u64(), answer["image"]["height"].as_u64()), (Some(64), Some(48)), "{answer}");
    }
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn jpeg_of_3000_scans_is_refused_quickly() {
    expect(timed_post("/v1/classify", "image/jpeg", jpeg_many_scans()), 400, "bad_image");
}

/// `n` parts named `junk-N`, then the image.
/// What `make fuzz` found zune-jpeg 0.5.15 panicking on (kept in
/// `host/fuzz/regressions/image/`): the valid JPEG is answered like any
/// photo (libjpeg-turbo decodes it), the damaged one is a 400.
#[test]
fn jpeg_zune_jpeg_panics_on_is_answered_not_dropped() {
    let valid = include_bytes!("../../host/fuzz/regressions/image/zune-jpeg-idct-panic-separate-scans-chroma-4x1.jpg");
    let ((status, answer), took) = timed_post("/v1/detect/fast", "image/jpeg", valid.to_vec());
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["image"]["width"].as_u64(), answer["image"]["height"].as_u64()), (Some(48), Some(32)), "{answer}");
    assert!(took < QUICK, "{took:?}");
    let damaged = include_bytes!("../../host/fuzz/regressions/image/zune-jpeg-idct-panic-two-frame-headers.jpg");
    expect(timed_post("/v1/detect/fast", "image/jpeg", damaged.to_vec()), 400, "bad_image");
}

fn form_of_many_parts(n: usize) -> (String, Vec<u8>) {
    let boundary = "hostile-boundary";
    let mut body = Vec::new();
    for i in 0..n {
        write!(body, "--{boundary}\r\ncontent-disposition: form-data; name=\"junk-{i}\"\r\n\r\nx\r\n").unwrap();
    }
    write!(body, "--{boundary}\r\ncontent-disposition: form-data; name=\"image\"; filename=\"c.png\"\r\ncontent-type: image/png\r\n\r\n").unwrap();
    body.extend_from_slice(&osprey_tests::image("chelsea.png"));
    write!(body, "\r\n--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn form_of_10000_parts_is_400() {
    let (content_type, body) = form_of_many_parts(10_000);
    let message = expect(timed_post("/v1/classify", &content_type, body), 400, "bad_form");
    assert!(message.contains("more than 64 parts"), "{message}");
    // A form of a few parts is still read.
    let (content_type, body) = form_of_many_parts(3);
    let ((status, answer), _) = timed_post("/v1/classify", &content_type, body);
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn form_part_with_an_endless_header_line_is_400() {
    let boundary = "hostile-boundary";
    let mut body = format!("--{boundary}\r\ncontent-disposition: form-data; name=\"image\"; filename=\"").into_bytes();
    body.resize(body.len() + (4 << 20), b'a');
    expect(timed_post("/v1/classify", &format!("multipart/form-data; boundary={boundary}"), body), 400, "bad_form");
}

#[test]
fn request_header_line_of_a_megabyte_is_431() {
    let addr = osprey_tests::default_server().addr;
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(QUICK)).unwrap();
    let start = Instant::now();
    let _ = write!(tcp, "GET /healthz HTTP/1.1\r\nhost: x\r\nx-endless: ");
    let _ = tcp.write_all(&vec![b'a'; 1 << 20]);
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(start.elapsed() < QUICK);
}

/// The input name of the classifier's model, from its OIP metadata.
fn classifier_input() -> String {
    let server = osprey_tests::default_server();
    let (status, meta) = read(client().get(server.url("/v2/models/efficientnet_lite3")).send().unwrap());
    assert_eq!(status, 200, "{meta}");
    meta["inputs"][0]["name"].as_str().unwrap().to_string()
}

fn oip_error(got: ((u16, Value), Duration)) -> String {
    let ((status, answer), took) = got;
    assert_eq!(status, 400, "{answer}");
    assert!(took < QUICK, "{took:?}");
    answer["error"].as_str().unwrap().to_string()
}

#[test]
fn oip_json_nested_100000_deep_is_400() {
    let input = classifier_input();
    let depth = 100_000;
    let data = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let body = format!(r#"{{"inputs":[{{"name":"{input}","shape":[1,280,280,3],"datatype":"UINT8","data":{data}}}]}}"#);
    let message = oip_error(timed_post("/v2/models/efficientnet_lite3/infer", "application/json", body.into_bytes()));
    assert!(message.contains("recursion limit"), "{message}");
}

#[test]
fn oip_shapes_whose_product_overflows_are_400() {
    let input = classifier_input();
    for shape in ["[18446744073709551615,280,280,3]", "[4294967295,4294967295,4294967295,4294967295]", "[9223372036854775807,9223372036854775807,280,3]"] {
        let body = format!(r#"{{"inputs":[{{"name":"{input}","shape":{shape},"datatype":"UINT8","data":[1,2,3]}}]}}"#);
        let message = oip_error(timed_post("/v2/models/efficientnet_lite3/infer", "application/json", body.into_bytes()));
        assert!(!message.is_empty());
    }
    // The binary extension: a size that no shape of this model fits.
    let header = format!(r#"{{"inputs":[{{"name":"{input}","shape":[1,280,280,3],"datatype":"UINT8","parameters":{{"binary_data_size":18446744073709551615}}}}]}}"#);
    let url = osprey_tests::default_server().url("/v2/models/efficientnet_lite3/infer");
    let start = Instant::now();
    let resp = client()
        .post(url)
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header.len())
        .body(header.into_bytes())
        .send()
        .unwrap();
    let (status, answer) = read(resp);
    assert_eq!(status, 400, "{answer}");
    assert!(start.elapsed() < QUICK);
}

/// A listener no request may reach: a playlist's `http:` entry points here.
fn trap() -> (TcpListener, String) {
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let url = format!("http://{}/segment.ts", trap.local_addr().unwrap());
    (trap, url)
}

fn nothing_reached(trap: &TcpListener) {
    assert!(trap.accept().is_err(), "ffmpeg fetched a URL from the upload");
}

#[test]
fn video_that_is_an_hls_playlist_is_415() {
    let _jobs = super::video::jobs_lock();
    let (trap, url) = trap();
    let playlist = format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nfile:///etc/passwd\n#EXTINF:2.0,\n{url}\n#EXT-X-ENDLIST\n");
    let message = expect(timed_post("/v1/videos?route=/v1/detect", "video/mp4", playlist.into_bytes()), 415, "unsupported_video_format");
    assert!(message.contains("'hls'"), "{message}");
    nothing_reached(&trap);
}

#[test]
fn video_that_is_an_ffconcat_list_is_415() {
    let _jobs = super::video::jobs_lock();
    let (trap, url) = trap();
    let list = format!("ffconcat version 1.0\nfile file:/etc/passwd\nfile {url}\n");
    let message = expect(timed_post("/v1/videos?route=/v1/detect", "video/mp4", list.into_bytes()), 415, "unsupported_video_format");
    assert!(message.contains("'concat'"), "{message}");
    nothing_reached(&trap);
}

/// An AVI of raw 64x48 frames whose headers say 100000x100000.
fn avi_claiming_100k() -> PathBuf {
    let dir = std::env::temp_dir().join("osprey-hostile-tests");
    std::fs::create_dir_all(&dir).unwrap();
    osprey_tests::fixture(&dir.join("claims-100k.avi"), |tmp| {
        let small = tmp.with_extension("small.avi");
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5", "-t", "1", "-c:v", "rawvideo", "-pix_fmt", "yuv420p"])
            .arg(&small)
            .status()
            .expect("ffmpeg (apt-get install ffmpeg)");
        assert!(status.success());
        let mut avi = std::fs::read(&small).unwrap();
        std::fs::remove_file(&small).unwrap();
        // avih: dwWidth, dwHeight after eight other fields; strf: biWidth, biHeight after biSize.
        let avih = avi.windows(4).position(|w| w == b"avih").unwrap() + 8 + 32;
        let strf = avi.windows(4).position(|w| w == b"strf").unwrap() + 8 + 4;
        for at in [avih, strf] {
            avi[at..at + 4].copy_from_slice(&100_000u32.to_le_bytes());
            avi[at + 4..at + 8].copy_from_slice(&100_000u32.to_le_bytes());
        }
        std::fs::write(tmp, avi).unwrap();
    })
}

#[test]
fn video_whose_stream_claims_100000_by_100000_is_400() {
    let _jobs = super::video::jobs_lock();
    let avi = std::fs::read(avi_claiming_100k()).unwrap();
    let message = expect(timed_post("/v1/videos?route=/v1/detect", "video/x-msvideo", avi), 400, "bad_video");
    assert!(message.contains("100000x100000"), "{message}");
}

/// A line of /proc/PID/status in MiB (`VmHWM`: the peak resident set so far).
pub fn status_mib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// The most the server's peak resident memory may grow while the eight
/// hostile uploads run: what the worst of them costs when decoded
/// (36 M pixels of 16-bit RGBA: 288 MB, then 108 MB of RGB) times the
/// chains running at once on this machine (`max_inflight`: 2 per core,
/// 4 here), with room for the allocator. Measured figures: README, Security notes.
const PEAK_GROWTH_MIB: u64 = 2048;

#[test]
fn eight_hostile_uploads_at_once_keep_peak_memory_bounded_while_a_good_client_is_served() {
    let server = osprey_tests::process::Osprey::start(&osprey_tests::repo().join("config/osprey.toml"), osprey_tests::process::ANY_PORT);
    let post = |path: &str, content_type: &str, body: Vec<u8>| -> ((u16, Value), Duration) {
        let start = Instant::now();
        let got = read(client().post(server.url(path)).header("content-type", content_type).body(body).send().unwrap());
        (got, start.elapsed())
    };
    let photo = osprey_tests::image("dog.jpg");
    // Warm: each route once, so that the peak below is the uploads' own.
    for path in ["/v1/classify", "/v1/detect/fast"] {
        assert_eq!(post(path, "image/jpeg", photo.clone()).0 .0, 200);
    }
    let before = status_mib(server.pid(), "VmHWM:");
    let input = {
        let (_, meta) = read(client().get(server.url("/v2/models/efficientnet_lite3")).send().unwrap());
        meta["inputs"][0]["name"].as_str().unwrap().to_string()
    };
    let nested = format!(r#"{{"inputs":[{{"name":"{input}","shape":[1],"datatype":"UINT8","data":{}1{}}}]}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let (form_type, form) = form_of_many_parts(10_000);
    let hostile: Vec<(&str, String, Vec<u8>)> = vec![
        ("/v1/detect/fast", "image/png".into(), png_bomb().to_vec()),
        ("/v1/classify", "image/png".into(), png_bomb().to_vec()),
        ("/v1/detect/fast", "image/webp".into(), webp_bomb().to_vec()),
        ("/v1/classify", "image/webp".into(), webp_bomb().to_vec()),
        ("/v1/classify", "image/jpeg".into(), jpeg_many_scans()),
        ("/v1/classify", "image/png".into(), png_long_idat().to_vec()),
        ("/v1/classify", form_type, form),
        ("/v2/models/efficientnet_lite3/infer", "application/json".into(), nested.into_bytes()),
    ];
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = std::sync::Barrier::new(hostile.len() + 1);
    let (answers, good) = std::thread::scope(|s| {
        let good = s.spawn(|| {
            start.wait();
            let mut served = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let ((status, answer), took) = post("/v1/classify", "image/jpeg", photo.clone());
                assert_eq!(status, 200, "the well-behaved client: {answer}");
                served.push(took);
            }
            served
        });
        let threads: Vec<_> = hostile
            .into_iter()
            .map(|(path, content_type, body)| {
                let (start, post) = (&start, &post);
                s.spawn(move || {
                    start.wait();
                    let ((status, answer), took) = post(path, &content_type, body);
                    (path, content_type, status, answer, took)
                })
            })
            .collect();
        let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (answers, good.join().unwrap())
    });
    let after = status_mib(server.pid(), "VmHWM:");
    for (path, content_type, status, answer, took) in &answers {
        eprintln!("hostile {path} {content_type}: {status} in {:.2} s", took.as_secs_f64());
        assert!(*status == 200 || (400..500).contains(status), "{path} {content_type}: {status} {answer}");
        assert!(*took < Duration::from_secs(30), "{path} {content_type}: {took:?}");
    }
    let worst = good.iter().max().copied().unwrap_or_default();
    eprintln!("well-behaved client: {} answers, slowest {:.2} s; peak RSS {before} MiB before, {after} MiB after", good.len(), worst.as_secs_f64());
    assert!(!good.is_empty(), "the well-behaved client was never answered");
    assert!(worst < Duration::from_secs(30), "the well-behaved client waited {worst:?}");
    assert!(after - before <= PEAK_GROWTH_MIB, "peak RSS grew from {before} MiB to {after} MiB (bound: {PEAK_GROWTH_MIB} MiB)");
}
