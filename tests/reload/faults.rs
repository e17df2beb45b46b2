//! Faults under load (issue 16, item 3), each against a real `osprey serve`
//! while clients keep asking: a model file truncated then deleted, a plugin
//! file replaced by garbage, SIGTERM with 200 requests in flight, no space
//! left for a video's temporary file, and none for compiled plugins. (The
//! ACME directory gone at renewal is in `tests/tls`.) What is measured here is in the
//! README, "Faults".

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osprey_tests::process::{Osprey, ANY_PORT};

use super::Site;

/// Long enough for a reload on a loaded 2-core machine (it takes ~1 s).
const VISIBLE: Duration = Duration::from_secs(30);

/// Clients asking `/v1/detect/fast` for the cat until stopped; every answer
/// that is not a 200 finding it, and every transport error, is kept.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<usize>>,
}

impl Load {
    fn start(server: &Osprey, clients: usize) -> Load {
        let (stop, failures) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let photo = osprey_tests::image("chelsea.png");
        let threads = (0..clients)
            .map(|_| {
                let (stop, failures, url, photo) = (stop.clone(), failures.clone(), server.url("/v1/detect/fast"), photo.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                    let mut served = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let sent = client.post(&url).header("content-type", "image/png").body(photo.clone()).send();
                        let failure = match sent {
                            Err(e) => Some(format!("no answer: {e}")),
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                let text = resp.text().unwrap_or_default();
                                (status != 200 || !text.contains("\"cat\"")).then(|| format!("{status} {text}"))
                            }
                        };
                        served += 1;
                        failures.lock().unwrap().extend(failure);
                    }
                    served
                })
            })
            .collect();
        Load { stop, failures, threads }
    }

    /// Stops the clients; how many requests they sent, and the failures.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let served = self.threads.into_iter().map(|t| t.join().unwrap()).sum();
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (served, failures)
    }
}

/// A site served by the real binary (the file watcher is on by default).
fn serve(site: &Site, server_settings: &str) -> Osprey {
    if !server_settings.is_empty() {
        let config = std::fs::read_to_string(site.path("osprey.toml")).unwrap();
        std::fs::write(site.path("osprey.toml"), format!("[server]\n{server_settings}\n{config}")).unwrap();
    }
    Osprey::start(&site.path("osprey.toml"), ANY_PORT)
}

/// Waits for the `count`th log line holding `needle`; how long that took.
fn logged(server: &Osprey, needle: &str, count: usize) -> Duration {
    let start = Instant::now();
    assert!(server.wait_for_log(needle, count, VISIBLE), "no {count} lines of {needle:?} within {VISIBLE:?}:\n{}", server.log("").join("\n"));
    start.elapsed()
}

const ROLLED_BACK: &str = "reload rolled back";
const SWAPPED: &str = "reload: now serving generation";

fn assert_served(what: &str, served: usize, failures: &[String]) {
    assert!(failures.is_empty(), "{what}: {} of {served} requests failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    assert!(served >= 10, "{what}: the clients sent only {served} requests");
}

#[test]
fn a_model_file_truncated_then_deleted_under_load_keeps_the_old_model() {
    let site = Site::new("fault-model");
    let server = serve(&site, "");
    let load = Load::start(&server, 2);
    let model = site.path("models/ssd/1/model.onnx");
    let whole = std::fs::read(&model).unwrap();
    let mut took = Vec::new();
    // Truncated in place: the file the running sessions were loaded from.
    std::fs::write(&model, &whole[..whole.len() / 3]).unwrap();
    took.push(logged(&server, ROLLED_BACK, 1));
    std::fs::write(&model, &whole).unwrap();
    took.push(logged(&server, SWAPPED, 1));
    std::fs::remove_file(&model).unwrap();
    took.push(logged(&server, ROLLED_BACK, 2));
    std::fs::write(&model, &whole).unwrap();
    took.push(logged(&server, SWAPPED, 2));
    // A few more answers from the model put back.
    std::thread::sleep(Duration::from_millis(500));
    let (served, failures) = load.finish();
    eprintln!("model truncated, restored, deleted, restored: {served} requests, {} failed; each reload seen after {took:?}", failures.len());
    eprintln!("{}", server.log("reload").join("\n"));
    assert_served("model file truncated then deleted", served, &failures);
}

#[test]
fn a_plugin_file_replaced_by_garbage_under_load_is_rolled_back() {
    let site = Site::new("fault-plugin");
    let server = serve(&site, "");
    let load = Load::start(&server, 2);
    let plugin = site.path("plugins/ssd.wasm");
    let whole = std::fs::read(&plugin).unwrap();
    let mut took = Vec::new();
    std::fs::write(&plugin, b"\0asm garbage, not a component".repeat(1000)).unwrap();
    took.push(logged(&server, ROLLED_BACK, 1));
    // Half a component: what a copy cut short leaves behind.
    std::fs::write(&plugin, &whole[..whole.len() / 2]).unwrap();
    took.push(logged(&server, ROLLED_BACK, 2));
    std::fs::write(&plugin, super::variant(&whole, "after-garbage")).unwrap();
    took.push(logged(&server, SWAPPED, 1));
    std::thread::sleep(Duration::from_millis(500));
    let (served, failures) = load.finish();
    eprintln!("plugin replaced by garbage, by half of itself, then fixed: {served} requests, {} failed; each reload seen after {took:?}", failures.len());
    eprintln!("{}", server.log("reload").join("\n"));
    assert_served("plugin replaced by garbage", served, &failures);
}

/// What became of one request sent before SIGTERM.
#[derive(Debug)]
enum Fate {
    Answered { status: u16, retry_after: bool, body: String },
    NoAnswer(String),
    /// Its connection was refused: it never reached the server (the
    /// listener had closed), so nothing was in flight to lose.
    NotConnected,
}

#[test]
fn sigterm_with_200_requests_in_flight_answers_or_refuses_each_cleanly() {
    const IN_FLIGHT: usize = 200;
    let site = Site::new("fault-sigterm");
    // Room for all 200 in the queue, so that all are in flight at SIGTERM.
    let mut server = serve(&site, "max_waiting = 256");
    let url = server.url("/v1/detect/fast");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build().unwrap();
    let photo = bytes_of(osprey_tests::image("chelsea.png"));
    let open_before = open_files(server.pid());
    let sent = Instant::now();
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let request = client.post(&url).header("content-type", "image/png").body(photo.clone());
            runtime.spawn(async move {
                match request.send().await {
                    Err(e) if e.is_connect() => Fate::NotConnected,
                    Err(e) => Fate::NoAnswer(format!("{e:?}")),
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let retry_after = resp.headers().contains_key("retry-after");
                        match resp.text().await {
                            Ok(body) => Fate::Answered { status, retry_after, body },
                            Err(e) => Fate::NoAnswer(format!("{status}, then the body was cut: {e:?}")),
                        }
                    }
                }
            })
        })
        .collect();
    // In flight: the server holds a connection for (nearly) each of them.
    let accepted = Instant::now();
    while open_files(server.pid()) < open_before + IN_FLIGHT * 9 / 10 && accepted.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let held = open_files(server.pid()) - open_before;
    let signalled = sent.elapsed();
    let exit = server.terminate();
    let exited = sent.elapsed();
    let fates: Vec<Fate> = requests.into_iter().map(|r| runtime.block_on(r).unwrap()).collect();
    let count = |f: &dyn Fn(&Fate) -> bool| fates.iter().filter(|x| f(x)).count();
    let ok = count(&|f| matches!(f, Fate::Answered { status: 200, body, .. } if body.contains("\"cat\"")));
    let refused = count(&|f| matches!(f, Fate::Answered { status: 429 | 503, retry_after: true, .. }));
    let unclean: Vec<&Fate> = fates.iter().filter(|f| !matches!(f, Fate::Answered { status: 200, .. } | Fate::Answered { status: 429 | 503, retry_after: true, .. } | Fate::NotConnected)).collect();
    let first_unanswered = fates.iter().find_map(|f| match f {
        Fate::NoAnswer(why) => Some(why.as_str()),
        Fate::Answered { .. } | Fate::NotConnected => None,
    });
    eprintln!(
        "SIGTERM {:.2} s after sending {IN_FLIGHT} requests ({held} connections held): {ok} answered 200, {refused} refused with Retry-After, {} unclean (first without an answer: {first_unanswered:?}); exited {exit} {:.2} s after they were sent",
        signalled.as_secs_f64(),
        unclean.len(),
        exited.as_secs_f64()
    );
    assert!(unclean.is_empty(), "{} of {IN_FLIGHT} requests were not answered cleanly: {:?}", unclean.len(), &unclean[..unclean.len().min(3)]);
    assert!(ok > 0, "not one request in flight was answered");
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped;
/// `None` (and why) where this process may not mount one.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(osprey_tests::unique_name("osprey-full"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&dir).output().map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("mount -t tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// An mp4 of `seconds` of noise at `size` (noise does not compress: the
/// file is large for its length).
fn noise_mp4(dir: &Path, name: &str, size: &str, seconds: u32) -> Vec<u8> {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate=10"), "-t", &seconds.to_string()])
        .args(["-vf", "noise=alls=60:allf=t,format=yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4"])
        .arg(&path)
        .status()
        .expect("ffmpeg (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg made no {name}");
    std::fs::read(&path).unwrap()
}

#[test]
fn no_space_for_a_video_upload_is_507_and_the_server_goes_on() {
    let tmpfs = match Tmpfs::mount("1m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: no_space_for_a_video_upload: cannot mount a small tmpfs ({why}); run the tests as root with CAP_SYS_ADMIN");
            return;
        }
    };
    let site = Site::new("fault-disk");
    let big = noise_mp4(&site.dir, "big.mp4", "640x480", 4);
    let small = noise_mp4(&site.dir, "small.mp4", "160x120", 1);
    assert!(big.len() > 2 << 20, "the big video is only {} bytes", big.len());
    assert!(small.len() < 256 << 10, "the small video is {} bytes", small.len());
    let tmpdir = tmpfs.0.to_str().unwrap().to_string();
    let server = Osprey::start_env(&site.path("osprey.toml"), ANY_PORT, &[("TMPDIR", &tmpdir)]);
    let load = Load::start(&server, 1);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let submit = |body: &[u8]| {
        let resp = client.post(server.url("/v1/videos?route=/v1/detect/fast")).header("content-type", "video/mp4").body(body.to_vec()).send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().unwrap())
    };
    let mut full = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let (status, answer) = submit(&big);
        full.push((status, answer, start.elapsed()));
    }
    // The space the refused uploads took is given back: a video that fits is taken.
    let (small_status, small_answer) = submit(&small);
    let health = client.get(server.url("/healthz")).send().unwrap().status().as_u16();
    let (served, failures) = load.finish();
    let left: Vec<_> = std::fs::read_dir(tmpfs.0.join("osprey-videos")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    for (status, answer, took) in &full {
        eprintln!("video of {} bytes into a 1 MiB TMPDIR: {status} in {:.2} s: {answer}", big.len(), took.as_secs_f64());
    }
    eprintln!("then one of {} bytes: {small_status}; /healthz {health}; images meanwhile: {served}, {} failed", small.len(), failures.len());
    for (status, answer, _) in &full {
        assert_eq!(*status, 507, "{answer}");
        assert_eq!(answer["error"]["code"], "insufficient_storage", "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("TMPDIR"), "the message names what to change: {answer}");
    }
    assert_eq!(small_status, 202, "a video that fits, after the refusals: {small_answer}");
    assert_eq!(health, 200);
    assert_served("images while the disk was full", served, &failures);
    assert!(left.len() <= 1, "refused uploads left behind: {left:?}");
}

#[test]
fn a_full_compiled_plugin_folder_under_load_compiles_in_memory_and_leaves_no_partial_file() {
    // Room for one compiled plugin (~0.6 MB each), not two.
    let tmpfs = match Tmpfs::mount("1m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: a_full_compiled_plugin_folder: cannot mount a small tmpfs ({why}); run the tests as root with CAP_SYS_ADMIN");
            return;
        }
    };
    let folder = tmpfs.0.join("compiled");
    let site = Site::new("fault-compiled");
    let server = serve(&site, &format!("compiled_cache = \"{}\"", folder.display()));
    const NOT_KEPT: &str = "cannot keep the compiled plugin";
    let at_start = server.log(NOT_KEPT).len();
    let load = Load::start(&server, 2);
    let plugin = site.path("plugins/ssd.wasm");
    let whole = std::fs::read(&plugin).unwrap();
    std::fs::write(&plugin, super::variant(&whole, "disk-full")).unwrap();
    let took = logged(&server, SWAPPED, 1);
    std::thread::sleep(Duration::from_millis(500));
    let (served, failures) = load.finish();
    let not_kept = server.log(NOT_KEPT);
    let left: Vec<String> = std::fs::read_dir(&folder).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    eprintln!("compiled plugins into a 1 MiB folder: {at_start} not kept at start; a new plugin swapped in after {took:?} under load: {served} requests, {} failed; left in the folder: {left:?}", failures.len());
    eprintln!("{}", not_kept.join("\n"));
    assert!(at_start >= 1, "the second plugin at start could not fit, and the log must say so:\n{}", server.log("").join("\n"));
    assert_eq!(not_kept.len(), at_start + 1, "the new plugin's copy could not fit either");
    assert!(not_kept.iter().all(|l| l.contains("No space left") && l.contains(&folder.display().to_string())), "{not_kept:?}");
    assert!(left.iter().all(|f| f.ends_with(".cwasm")), "partial copies left behind: {left:?}");
    assert_served("compiled plugin folder full", served, &failures);
}
