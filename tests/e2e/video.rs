//! Video jobs end to end: upload, ffprobe, frames through a route, results as
//! Server-Sent Events; the precise refusals; cancelling by disconnect and by
//! DELETE, with ffmpeg stopped and the upload removed.
//!
//! The default server runs at most 2 jobs at once (`[video] max_jobs`), so
//! the tests that start jobs take `JOBS` in turn (the client's test too).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use osprey_tests::fixture;
use reqwest::blocking::Response;
use serde_json::Value;

use super::{client, read};

static JOBS: Mutex<()> = Mutex::new(());

/// One test at a time may run video jobs on the shared server.
pub fn jobs_lock() -> MutexGuard<'static, ()> {
    JOBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The folder of the test videos, kept between runs (they are made once).
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("osprey-video-tests");
        std::fs::create_dir_all(&dir).unwrap();
        fixture(&dir.join("horses.jpg"), |tmp| std::fs::write(tmp, osprey_tests::image("horses.jpg")).unwrap());
        dir
    })
}

/// An H.264 mp4 of the horses photo, 640 px wide, with light noise so every
/// frame differs (identical frames would be answered from the cache).
pub fn horses_mp4(name: &str, seconds: u32, fps: u32, extra: &[&str]) -> PathBuf {
    fixture(&dir().join(name), |tmp| {
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-loop", "1", "-i"])
            .arg(dir().join("horses.jpg"))
            .args(["-t", &seconds.to_string(), "-r", &fps.to_string()])
            .args(["-vf", "scale=640:-2,noise=alls=6:allf=t,format=yuv420p", "-c:v", "libx264", "-preset", "ultrafast"])
            .args(extra)
            .args(["-f", "mp4"])
            .arg(tmp)
            .status()
            .expect("ffmpeg (apt-get install ffmpeg)");
        assert!(status.success(), "ffmpeg made no {name}");
    })
}

fn submit(query: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let server = osprey_tests::default_server();
    let resp = client().post(server.url(&format!("/v1/videos{query}"))).header("content-type", content_type).body(body).send().unwrap();
    read(resp)
}

fn submit_file(query: &str, path: &Path) -> Value {
    let (status, answer) = submit(query, "video/mp4", std::fs::read(path).unwrap());
    assert_eq!(status, 202, "{answer}");
    answer
}

fn events_of(answer: &Value) -> Response {
    let server = osprey_tests::default_server();
    let resp = client().get(server.url(answer["events"].as_str().unwrap())).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    resp
}

/// Reads Server-Sent Events until `stop` says so or the stream ends.
fn read_events(resp: Response, mut stop: impl FnMut(&str, &Value) -> bool) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut name = String::new();
    for line in BufReader::new(resp).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let data: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
            let done = stop(&name, &data);
            events.push((std::mem::take(&mut name), data));
            if done {
                break;
            }
        }
    }
    events
}

fn status_of(id: &str) -> (u16, Value) {
    read(client().get(osprey_tests::default_server().url(&format!("/v1/videos/{id}"))).send().unwrap())
}

/// Waits (up to 15 s) for the job to reach `state`.
fn wait_for_state(id: &str, state: &str) -> Value {
    let start = Instant::now();
    loop {
        let (code, status) = status_of(id);
        assert_eq!(code, 200, "{status}");
        if status["state"] == state || start.elapsed() > Duration::from_secs(15) {
            assert_eq!(status["state"], state, "{status}");
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to 5 s) for the job's upload to be removed.
fn assert_upload_removed(id: &str) {
    let path = osprey::video::upload::path_of(id);
    let start = Instant::now();
    while path.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!path.exists(), "{} is still there", path.display());
}

fn expect_error(got: (u16, Value), status: u16, code: &str) -> String {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    got.1["error"]["message"].as_str().unwrap().to_string()
}

#[test]
fn events_give_every_frame_with_horses_then_done() {
    let _jobs = jobs_lock();
    let video = horses_mp4("short.mp4", 2, 5, &[]);
    let accepted = submit_file("?conf=0.5", &video);
    assert_eq!((accepted["width"].as_u64(), accepted["fps"].as_f64(), accepted["frames"].as_u64()), (Some(640), Some(5.0), Some(10)), "{accepted}");
    assert_eq!(accepted["duration_s"].as_f64(), Some(2.0), "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(accepted["events"], format!("/v1/videos/{id}/events"));

    let events = read_events(events_of(&accepted), |_, _| false);
    let (frames, last) = events.split_at(events.len() - 1);
    assert_eq!(frames.len(), 10, "{events:?}");
    for (i, (name, frame)) in frames.iter().enumerate() {
        assert_eq!(name, "frame");
        assert_eq!(frame["index"], i);
        assert_eq!(frame["time_s"].as_f64(), Some(i as f64 / 5.0));
        let detections = frame["result"]["detections"].as_array().unwrap_or_else(|| panic!("frame {i}: {frame}"));
        assert!(detections.iter().any(|d| d["label"] == "horse"), "frame {i}: {frame}");
        // `conf=0.5` reached the route.
        assert!(detections.iter().all(|d| d["score"].as_f64().unwrap() >= 0.5), "frame {i}: {frame}");
        assert_eq!(frame["result"]["image"]["width"], 640);
    }
    assert_eq!(last[0].0, "done", "{last:?}");
    assert_eq!(last[0].1["frames"], 10);
    assert!(last[0].1["fps"].as_f64().unwrap() > 0.0);

    let status = wait_for_state(&id, "done");
    assert_eq!((status["frames_done"].as_u64(), status["frames"].as_u64()), (Some(10), Some(10)), "{status}");
    assert_upload_removed(&id);
    // A second subscriber after the end gets the whole replay.
    let again = read_events(events_of(&accepted), |_, _| false);
    assert_eq!(again.len(), 11);
}

#[test]
fn refusals_are_precise() {
    let _jobs = jobs_lock();
    let video = std::fs::read(horses_mp4("short.mp4", 2, 5, &[])).unwrap();
    let message = expect_error(submit("?route=/v1/nope", "video/mp4", video.clone()), 400, "bad_route");
    assert!(message.contains("/v1/detect/fast"), "the message lists the routes: {message}");
    expect_error(submit("?route=/v1/fuse", "video/mp4", video.clone()), 400, "bad_route");
    expect_error(submit("?conf=7", "video/mp4", video.clone()), 400, "bad_param");
    expect_error(submit("?colour=red", "video/mp4", video.clone()), 400, "bad_param");
    expect_error(submit("", "text/plain", video), 415, "unsupported_media_type");
    let message = expect_error(submit("", "video/mp4", b"just some text, no video\n".repeat(50)), 400, "bad_video");
    assert!(message.contains("Invalid data"), "ffprobe's reason: {message}");
    assert!(!message.contains("osprey-videos"), "the server's paths stay private: {message}");
    expect_error(submit("", "video/mp4", Vec::new()), 400, "empty_body");
    // 130 s (tiny frames, one a second) is over the default max_seconds of 120.
    let long = fixture(&dir().join("long.mp4"), |tmp| {
        let made = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=64x64:r=1", "-t", "130", "-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4"])
            .arg(tmp)
            .status()
            .unwrap();
        assert!(made.success());
    });
    let message = expect_error(submit("", "video/mp4", std::fs::read(&long).unwrap()), 413, "video_too_long");
    assert!(message.contains("130.0 s") && message.contains("120 s"), "{message}");
    // A declared length over max_bytes (200 MB) is refused before any byte is read.
    let server = osprey_tests::default_server();
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "POST /v1/videos HTTP/1.1\r\nhost: osprey\r\ncontent-type: video/mp4\r\ncontent-length: 300000000\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("too_large") {
        match tcp.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("\"too_large\""), "{answer}");
    // Unknown ids.
    expect_error(status_of("0123456789abcdef"), 404, "not_found");
    expect_error(read(client().delete(server.url("/v1/videos/0123456789abcdef")).send().unwrap()), 404, "not_found");
    expect_error(read(client().get(server.url("/v1/videos/0123456789abcdef/events")).send().unwrap()), 404, "not_found");
    expect_error(read(client().get(server.url("/v1/videos")).send().unwrap()), 405, "method_not_allowed");
}

/// An mp4 written the usual way keeps its index (moov) at the end: cut in
/// half, it is refused at once. One with the index first (`+faststart`)
/// probes fine and decodes up to the cut: its frames arrive, then `failed`.
#[test]
fn truncated_mp4_is_refused_or_fails_after_its_last_frame() {
    let _jobs = jobs_lock();
    let mut cut = std::fs::read(horses_mp4("short.mp4", 2, 5, &[])).unwrap();
    cut.truncate(cut.len() / 2);
    let message = expect_error(submit("", "video/mp4", cut), 400, "bad_video");
    assert!(message.contains("moov atom not found"), "{message}");

    let mut cut = std::fs::read(horses_mp4("faststart.mp4", 2, 5, &["-movflags", "+faststart"])).unwrap();
    cut.truncate(cut.len() / 2);
    let (status, accepted) = submit("", "video/mp4", cut);
    assert_eq!(status, 202, "{accepted}");
    let events = read_events(events_of(&accepted), |_, _| false);
    let (frames, last) = events.split_at(events.len() - 1);
    assert!(!frames.is_empty() && frames.len() < 10, "frames up to the cut: {events:?}");
    assert!(frames.iter().all(|(name, f)| name == "frame" && f["result"]["detections"].is_array()), "{frames:?}");
    assert_eq!(last[0].0, "failed", "{last:?}");
    assert_eq!(last[0].1["code"], "bad_video", "{last:?}");
    assert!(last[0].1["message"].as_str().unwrap().contains("stops after"), "{last:?}");
    wait_for_state(accepted["id"].as_str().unwrap(), "failed");
}

/// Long enough (60 frames through the precise detector) to be running when cancelled.
fn slow_job() -> Value {
    submit_file("?route=/v1/detect", &horses_mp4("slow.mp4", 6, 10, &[]))
}

#[test]
fn closing_the_events_stream_cancels_the_job() {
    let _jobs = jobs_lock();
    let accepted = slow_job();
    let id = accepted["id"].as_str().unwrap();
    let seen = read_events(events_of(&accepted), |name, _| name == "frame");
    assert_eq!(seen[0].0, "frame");
    // The response is dropped here: the connection closes.
    let status = wait_for_state(id, "cancelled");
    assert!(status["frames_done"].as_u64().unwrap() < 60, "{status}");
    assert_upload_removed(id);
    // A later subscriber reads why it stopped.
    let events = read_events(events_of(&accepted), |_, _| false);
    let last = events.last().unwrap();
    assert_eq!((last.0.as_str(), &last.1["code"]), ("failed", &Value::from("cancelled")), "{last:?}");
}

#[test]
fn delete_cancels_and_a_third_job_is_turned_away() {
    let _jobs = jobs_lock();
    let server = osprey_tests::default_server();
    let (first, second) = (slow_job(), slow_job());
    // max_jobs = 2: both slots are taken.
    let video = std::fs::read(horses_mp4("short.mp4", 2, 5, &[])).unwrap();
    let resp = client().post(server.url("/v1/videos")).header("content-type", "video/mp4").body(video.clone()).send().unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    expect_error(read(resp), 429, "overloaded");
    for job in [&first, &second] {
        let id = job["id"].as_str().unwrap();
        assert_eq!(status_of(id).1["state"], "running");
        let resp = client().delete(server.url(&format!("/v1/videos/{id}"))).send().unwrap();
        assert_eq!(resp.status(), 204);
        wait_for_state(id, "cancelled");
        assert_upload_removed(id);
    }
    // The slots are free again: a new job is taken, not turned away.
    let start = Instant::now();
    let (status, body) = loop {
        let resp = client().post(server.url("/v1/videos")).header("content-type", "video/mp4").body(video.clone()).send().unwrap();
        let (status, body) = read(resp);
        if status != 429 || start.elapsed() > Duration::from_secs(5) {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    assert_eq!(client().delete(server.url(&format!("/v1/videos/{id}"))).send().unwrap().status(), 204);
    wait_for_state(id, "cancelled");
}

/// A job that nobody follows is cancelled after `[video] idle_cancel_s`: on a
/// server of its own, whose config is the default one with that set to 1 s.
#[test]
fn a_job_nobody_follows_is_cancelled() {
    let repo = osprey_tests::repo();
    let config = std::fs::read_to_string(repo.join("config/osprey.toml")).unwrap();
    // The default config's paths are relative to config/: made absolute here.
    let config = config.replace("\"../", &format!("\"{}/", repo.display())) + "\n[video]\nidle_cancel_s = 1\n";
    let dir = repo.join("target/test-configs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", osprey_tests::unique_name("video-idle")));
    std::fs::write(&path, config).unwrap();
    let server = osprey_tests::start(&path);
    let video = std::fs::read(horses_mp4("slow.mp4", 6, 10, &[])).unwrap();
    let resp = client().post(server.url("/v1/videos?route=/v1/detect")).header("content-type", "video/mp4").body(video).send().unwrap();
    let (status, accepted) = read(resp);
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    let start = Instant::now();
    let state = loop {
        let (_, s) = read(client().get(server.url(&format!("/v1/videos/{id}"))).send().unwrap());
        if s["state"] != "running" || start.elapsed() > Duration::from_secs(15) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state["state"], "cancelled", "{state}");
    assert!(start.elapsed() >= Duration::from_millis(500), "cancelled after {:?}, before idle_cancel_s", start.elapsed());
    assert!(state["frames_done"].as_u64().unwrap() < 60, "{state}");
    assert_upload_removed(id);
    let _ = std::fs::remove_file(&path);
}
