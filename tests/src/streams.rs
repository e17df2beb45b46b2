//! Live streams from outside, shared by the streams test and its bench: an
//! `osprey serve` child on the default config (its `[streams]` pointed at a
//! folder of the caller's), ffmpeg publishing a scripted source over RTMP (a
//! still photo, then moving test patterns, at a frame rate), HLS read back
//! as a viewer would, the events as SSE, and the CPU a server and its
//! ffmpegs used.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::{Osprey, ANY_PORT};
use serde_json::{json, Value};

/// One test at a time: each runs x264, ffmpeg and the models at a frame
/// rate, and two side by side on 2 cores would drop each other's frames.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub const TOKEN: &str = "stream-tests-admin-token-0123456789";

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// The default config with `[streams]` for this test: its own audit file,
/// its own port range (tests run side by side), pulls from loopback.
pub fn config(test: &str, ports: (u16, u16)) -> (PathBuf, PathBuf) {
    config_with(test, ports, "max_streams = 2\nmax_fps = 25")
}

/// [`config`] with these `[streams]` lines instead of the limits (streams
/// at once, frame rate) the tests use.
pub fn config_with(test: &str, ports: (u16, u16), limits: &str) -> (PathBuf, PathBuf) {
    let repo = crate::repo();
    let dir = std::env::temp_dir().join(crate::unique_name(&format!("osprey-streams-{test}")));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo.join("config/osprey.toml")).unwrap();
    let (head, _) = text.split_once("\n[streams]\n").expect("the default config has [streams]");
    let base = format!("\"{}/", repo.display());
    let head = head.replace("\"../", &base);
    let audit = dir.join("audit.sqlite");
    let text = format!(
        "{head}\n[streams]\n{limits}\nports = [{}, {}]\nallow = [\"127.0.0.1\"]\nstall_ms = 3000\naudit = \"{}\"\n",
        ports.0,
        ports.1,
        audit.display()
    );
    let path = dir.join("osprey.toml");
    std::fs::write(&path, text).unwrap();
    (path, audit)
}

pub fn start(config: &Path) -> Osprey {
    Osprey::start_env(config, ANY_PORT, &[("OSPREY_ADMIN_TOKEN", TOKEN)])
}

pub fn post(server: &Osprey, path: &str, body: Value) -> (u16, Value) {
    let resp = client().post(server.url(path)).bearer_auth(TOKEN).json(&body).send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

pub fn get_json(server: &Osprey, path: &str) -> Value {
    client().get(server.url(path)).bearer_auth(TOKEN).send().unwrap().json().unwrap()
}

/// Creates a stream; its 201 answer.
pub fn create(server: &Osprey, body: Value) -> Value {
    let (status, answer) = post(server, "/v1/streams", body);
    assert_eq!(status, 201, "{answer}");
    answer
}

/// Waits until `f` holds, polling; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The scripted source: `still_s` seconds of a still photo, then `motion_s`
/// of moving test patterns, 640x360 at 25 fps, H.264 as OBS would send it.
pub fn script_args(still_s: u32, motion_s: u32) -> Vec<String> {
    script_args_at(still_s, motion_s, 25)
}

/// [`script_args`] at `fps` frames a second.
pub fn script_args_at(still_s: u32, motion_s: u32, fps: u32) -> Vec<String> {
    let photo = osprey::nn::runtime::cache_dir().join("images/horses.jpg");
    // Paced by the `realtime` filter after the concatenation, not by `-re`:
    // `-re` paces each input from the start, so the motion input's frames
    // pile up while the still plays and then go out in a burst (up to 19 of
    // 50 frames dropped at the switch by the newest-frame-wins hand-over).
    let mut args: Vec<String> = vec!["-nostdin".into(), "-v".into(), "error".into()];
    let mut filter = String::new();
    let mut inputs = 0;
    if still_s > 0 {
        args.extend(["-loop", "1", "-framerate", &fps.to_string(), "-t", &still_s.to_string(), "-i"].map(String::from));
        args.push(photo.display().to_string());
        filter.push_str(&format!("[{inputs}:v]scale=640:360,setsar=1,fps={fps},format=yuv420p[s{inputs}];"));
        inputs += 1;
    }
    if motion_s > 0 {
        args.extend(["-f", "lavfi", "-t", &motion_s.to_string(), "-i", &format!("testsrc2=size=640x360:rate={fps}")].map(String::from));
        filter.push_str(&format!("[{inputs}:v]setsar=1,format=yuv420p[s{inputs}];"));
        inputs += 1;
    }
    let labels: String = (0..inputs).map(|i| format!("[s{i}]")).collect();
    filter.push_str(&format!("{labels}concat=n={inputs}:v=1,realtime[v]"));
    args.extend(["-filter_complex", &filter, "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", &fps.to_string(), "-b:v", "1500k"].map(String::from));
    args
}

/// ffmpeg publishing the script to an RTMP URL (as OBS would).
pub fn publish(url: &str, still_s: u32, motion_s: u32) -> Child {
    publish_at(url, still_s, motion_s, 25)
}

/// [`publish`] at `fps` frames a second.
pub fn publish_at(url: &str, still_s: u32, motion_s: u32, fps: u32) -> Child {
    let mut args = script_args_at(still_s, motion_s, fps);
    args.extend(["-f", "flv", url].map(String::from));
    Command::new("ffmpeg").args(&args).stdin(Stdio::null()).spawn().expect("ffmpeg (apt-get install ffmpeg)")
}

/// The stream's Server-Sent Events, collected on a thread of their own.
pub struct Events(pub Arc<Mutex<Vec<(String, Value)>>>);

impl Events {
    pub fn follow(server: &Osprey, events: &str) -> Events {
        // No timeout: the events last as long as the stream (the blocking client's default is 30 s).
        let follower = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
        let resp = follower.get(server.url(events)).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let store = Arc::new(Mutex::new(Vec::new()));
        let into = store.clone();
        std::thread::spawn(move || {
            let mut name = String::new();
            for line in BufReader::new(resp).lines() {
                let Ok(line) = line else { return };
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    into.lock().unwrap().push((name.clone(), serde_json::from_str(d).unwrap_or(Value::Null)));
                }
            }
        });
        Events(store)
    }

    pub fn frames(&self) -> Vec<Value> {
        self.0.lock().unwrap().iter().filter(|(n, _)| n == "frame").map(|(_, v)| v.clone()).collect()
    }
}

/// A segment of a viewer's playlist: its number, when it was first seen, its bytes.
pub type Segment = (u64, Instant, Vec<u8>);

/// Segments of a viewer's playlist as they appear.
pub fn record(server: &Osprey, hls: &str, segments: usize, limit: Duration) -> Vec<Segment> {
    let c = client();
    let mut got: Vec<Segment> = Vec::new();
    let until = Instant::now() + limit;
    let base = hls.split_once('?').map_or(hls, |(b, _)| b);
    let dir = &base[..base.rfind('/').unwrap() + 1];
    while got.len() < segments && Instant::now() < until {
        let list = c.get(server.url(hls)).send().unwrap().text().unwrap();
        for line in list.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let n: u64 = line.split('.').next().unwrap().parse().unwrap();
            if got.iter().any(|(m, _, _)| *m == n) {
                continue;
            }
            let seen = Instant::now();
            let url = format!("{dir}{line}");
            let resp = c.get(server.url(&url)).send().unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{url}");
            got.push((n, seen, resp.bytes().unwrap().to_vec()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    got.sort_by_key(|(n, _, _)| *n);
    got
}

pub fn ffprobe_json(path: &Path) -> Value {
    let out = Command::new("ffprobe").args(["-v", "error", "-print_format", "json", "-show_streams", "-count_frames"]).arg(path).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(json!({}))
}

/// Seconds from publishing each frame to the first sight of its HLS segment,
/// sorted: frame n of segment k (k * fps .. (k + 1) * fps) was published at
/// `published + n / fps` and is out when k first appears in the playlist.
pub fn hls_latencies(published: Instant, segments: &[(u64, Instant, Vec<u8>)], fps: u32) -> Vec<f64> {
    let fps = u64::from(fps);
    let mut latencies: Vec<f64> = Vec::new();
    for (k, seen, _) in segments {
        for n in k * fps..(k + 1) * fps {
            let published_at = published + Duration::from_secs_f64(n as f64 / fps as f64);
            latencies.push(seen.saturating_duration_since(published_at).as_secs_f64());
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU seconds used so far by process `pid` and the processes it started
/// (osprey's ffmpegs): those running, and those that ended and were waited for.
pub fn cpu_seconds(pid: u32) -> f64 {
    crate::proc::tree_cpu_seconds(pid) + crate::proc::ended_children_cpu_seconds(pid).unwrap_or(0.0)
}
