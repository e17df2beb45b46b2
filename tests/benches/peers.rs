//! Osprey against what its users run today, in one run on this machine: the
//! seeds' stack (Flask under gunicorn, 2 sync workers) and FastAPI under
//! uvicorn (2 workers), both on ONNX Runtime 1.31.1 CPU, each peer twice (1
//! and 2 intra-op threads per session: the better of the two counts),
//! beside `target/release/osprey` on its default config. All do the same
//! decode, preprocessing, model and post-processing (`tests/bench/pipeline.py`
//! is the Python side; big JPEGs decoded at a reduced scale on both sides)
//! on the same photos (dog.jpg, and the 12 MP photo setup makes from it),
//! driven by the serving bench's load generator (`serving/load.rs`) at
//! concurrency 1, 8 and 32.
//!
//! Run: `make bench-peers` (sets up osprey and the peers' venv first), or
//! `cargo bench -p osprey-tests --bench peers` once `make setup bench-deps` ran.
//!
//! Per stack, one server for the whole run (all three models loaded):
//! first a correctness check (each peer's answers on dog.jpg and chelsea.png
//! must match osprey's: same labels, boxes within 2 px or 1% of the photo's
//! side, scores within 0.05), then per route and level a warm-up and a window
//! of `OSPREY_BENCH_SECS` (default 5) s. Every request sends the photo with
//! a number of its own after the image's end (`load::http_distinct`), so
//! osprey's result cache never answers these rows; the "osprey, cache hit"
//! rows then post the unchanged photo again and again to the same server
//! (measured only if its second answer says `x-osprey-cache: hit`). Columns:
//! - req/s, p50, p99: the load generator's (requests that *end* in the window);
//! - CPU cores: user+sys time of the server's process tree (the process and
//!   all its descendants, from /proc/<pid>/stat) during the window / window;
//! - peak RSS: the sum of VmHWM over that tree at the end of the stack's run,
//!   so with all three models loaded and used. A sum of peaks: pages shared
//!   between gunicorn/uvicorn workers (libraries, what the master had before
//!   forking) count once per process, so it errs high for the peers; the
//!   summed PSS at the end, which counts shared pages once, is printed beside;
//! - RSS after `OSPREY_BENCH_RSS_AFTER` (1000) requests: the sum of VmRSS over
//!   the tree right after that many requests (all routes and photos in turn,
//!   8 at a time), sent before any measured row.
//!
//! Before the stacks, osprey's own preparation (decode + letterbox or
//! resize into the model input, in this process) of the 12 MP photo is timed
//! per route, decoded in full and at the reduced scale the host picks.
//!
//! Environment:
//! - `OSPREY_PEERS_VENV`: the peers' venv (default `$OSPREY_CACHE/venv-peers`).
//! - `OSPREY_BENCH_CONFIG`: osprey's config (default `config/osprey.toml`,
//!   batching off).
//! - `OSPREY_BENCH_BATCH_CONFIG`: the config of the "osprey +batching" rows
//!   (default `tests/bench/osprey-batching.toml`: the default config with
//!   `max_batch` on the two models that can batch).
//! - `OSPREY_BENCH_STACKS`: a comma list to run only some stacks
//!   (`osprey,batching,flask1,flask2,fastapi1,fastapi2`).
//! - `OSPREY_BENCH_RSS_AFTER`: requests before the RSS reading (default 1000).
//! - `OSPREY_BENCH_LEVELS`: concurrency levels (default `1,8,32`). On a busy
//!   machine, /v1/detect at c=32 passes the route's 10 s deadline and the
//!   load generator stops at the first 504: `1,8` then still gives a table.
//!
//! The table and the goals go to stdout and `target/bench-peers.md`.

#[path = "serving/load.rs"]
mod load;

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use load::{Stats, Window};
use osprey_tests::proc::{cpu_seconds, tree, tree_cpu_seconds};
use serde_json::Value;

const ROUTES: [&str; 3] = ["/v1/detect", "/v1/detect/fast", "/v1/classify"];
/// The photos every route is measured on: darknet's 768x576 dog.jpg, and
/// the 4032x3024 phone-sized photo `models/fetch.py` makes from it.
const BIG: &str = "dog-12mp.jpg";
const MEASURED: [&str; 2] = ["dog.jpg", BIG];
/// The photos answers are checked on (the rotated copy: EXIF orientation).
const PHOTOS: [(&str, &str); 4] =
    [("dog.jpg", "image/jpeg"), ("chelsea.png", "image/png"), (BIG, "image/jpeg"), ("dog-12mp-exif6.jpg", "image/jpeg")];
/// Concurrency levels: `OSPREY_BENCH_LEVELS` (a comma list), default 1, 8, 32.
fn levels() -> Vec<usize> {
    let from_env = std::env::var("OSPREY_BENCH_LEVELS").ok().map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect::<Vec<_>>());
    from_env.filter(|l| !l.is_empty()).unwrap_or_else(|| vec![1, 8, 32])
}
/// gunicorn's and uvicorn's worker processes: one per core of this machine.
const WORKERS: usize = 2;
const OSPREY: &str = "osprey";
const CACHE_HIT: &str = "osprey, cache hit";
const BATCHING: &str = "osprey +batching";
const FLASK1: &str = "flask+gunicorn, 2x1 threads";
const FLASK2: &str = "flask+gunicorn, 2x2 threads";
const FASTAPI1: &str = "fastapi+uvicorn, 2x1 threads";
const FASTAPI2: &str = "fastapi+uvicorn, 2x2 threads";
const PEERS: [&str; 4] = [FLASK1, FLASK2, FASTAPI1, FASTAPI2];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Osprey,
    Flask,
    FastApi,
}

struct Stack {
    /// Short id for `OSPREY_BENCH_STACKS` and file names.
    id: &'static str,
    name: &'static str,
    kind: Kind,
    config: Option<PathBuf>,
    /// A peer's ONNX Runtime intra-op threads per session (`PEERS_ORT_THREADS`).
    threads: usize,
}

struct Row {
    route: &'static str,
    photo: &'static str,
    stack: &'static str,
    concurrency: usize,
    stats: Stats,
    cores: f64,
    /// Cores used by other processes of the machine during the window.
    others: f64,
    rss_mib: f64,
}

/// A stack's memory: the sum of VmHWM at the end, of VmRSS after the first requests.
struct Memory {
    stack: &'static str,
    peak_mib: f64,
    after_mib: f64,
}

fn main() {
    let w = Window::from_env();
    let started = Instant::now();
    let mut report = preamble(w);
    report.push_str(&prep_times());
    let (runs_table, ceilings) = model_runs();
    report.push_str(&runs_table);
    let (mut rows, mut reference, mut notes, mut memory) = (Vec::new(), None, String::new(), Vec::new());
    for stack in stacks() {
        eprintln!("== {} ({:.0} s so far)", stack.name, started.elapsed().as_secs_f64());
        let (stack_rows, note, mem) = run_stack(&stack, w, &mut reference);
        rows.extend(stack_rows);
        notes.push_str(&note);
        memory.push(mem);
    }
    report.push_str(&table(&rows));
    report.push_str(&footnotes(&rows));
    report.push_str(&memory_table(&memory));
    let _ = write!(report, "\nEach stack's process tree, and how busy the rest of the machine was:\n\n{notes}");
    report.push_str(&summary(&rows, &memory, &ceilings, w));
    println!("\n{report}");
    let out = osprey_tests::repo().join("target/bench-peers.md");
    std::fs::write(&out, &report).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    eprintln!("wrote {} ({:.0} s in all)", out.display(), started.elapsed().as_secs_f64());
}

/// One server: its answers checked against osprey's (the first stack's
/// become the reference), then every route at every level; its rows and a
/// line on its memory and on the machine's background load.
fn run_stack(stack: &Stack, w: Window, reference: &mut Option<Vec<(String, Value)>>) -> (Vec<Row>, String, Memory) {
    let server = Running::start(stack);
    let answers = answers(&server.base);
    match (&*reference, stack.kind) {
        (None, Kind::Osprey) => *reference = Some(answers),
        (Some(r), _) => check(stack.name, r, &answers),
        (None, _) => eprintln!("{}: answers not checked (osprey did not run first)", stack.name),
    }
    let after = requests_then_rss(&server.base, server.pid);
    let mut rows = Vec::new();
    for route in ROUTES {
        for photo in MEASURED {
            let (body, content_type) = (osprey_tests::image(photo), "image/jpeg");
            let url = format!("{}{route}", server.base);
            let hits = stack.name == OSPREY && photo == MEASURED[0] && cache_hits(&url, content_type, &body);
            for (name, distinct) in [(stack.name, true), (CACHE_HIT, false)] {
                if !distinct && !hits {
                    continue;
                }
                for n in levels() {
                    let (stats, cores, others) = measure(&url, content_type, &body, n, w, server.pid, distinct);
                    eprintln!(
                        "   {name} {route} {photo} c={n}: {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms, {cores:.2} cores (others {others:.2})",
                        stats.per_sec, stats.p50_ms, stats.p99_ms
                    );
                    rows.push(Row { route, photo, stack: name, concurrency: n, stats, cores, others, rss_mib: f64::NAN });
                }
            }
        }
    }
    let (rss, pss) = (peak_rss_tree_mib(server.pid), pss_tree_mib(server.pid));
    rows.iter_mut().for_each(|r| r.rss_mib = rss);
    let others: Vec<f64> = rows.iter().map(|r| r.others).collect();
    let note = format!(
        "- {}: {} processes, sum of VmHWM {rss:.0} MiB, sum of PSS at the end {pss:.0} MiB; \
         other processes used {:.2} cores on average during its windows (at most {:.2})\n",
        stack.name,
        tree(server.pid).len(),
        others.iter().sum::<f64>() / others.len().max(1) as f64,
        others.iter().copied().fold(0.0, f64::max)
    );
    (rows, note, Memory { stack: stack.name, peak_mib: rss, after_mib: after })
}

/// `OSPREY_BENCH_RSS_AFTER` (1000) requests, every route and measured photo
/// in turn, 8 at a time, each body distinct; then the sum of VmRSS over the tree.
fn requests_then_rss(base: &str, root: u32) -> f64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let total: usize = std::env::var("OSPREY_BENCH_RSS_AFTER").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let photos: Vec<Vec<u8>> = MEASURED.iter().map(|p| osprey_tests::image(p)).collect();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let route = ROUTES[i % ROUTES.len()];
                    let mut body = photos[(i / ROUTES.len()) % photos.len()].clone();
                    body.extend_from_slice(format!("\nrss{i}").as_bytes());
                    let resp = client.post(format!("{base}{route}")).header("content-type", "image/jpeg").body(body).send();
                    let status = resp.map(|r| r.status().as_u16()).unwrap_or(0);
                    assert_eq!(status, 200, "POST {route} during the first {total} requests");
                }
            });
        }
    });
    let rss = tree(root).into_iter().map(|pid| status_mib(pid, "VmRSS:")).filter(|v| v.is_finite()).sum();
    eprintln!("   RSS after {total} requests ({:.0} s): {rss:.0} MiB", started.elapsed().as_secs_f64());
    rss
}

/// A `kB` field of /proc/<pid>/status, in MiB (NaN where /proc has no answer).
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.map_or(f64::NAN, |k| k / 1024.0)
}

/// Each route's model and its input, as config/osprey.toml and the
/// image-prep settings of its routes give them.
fn route_models() -> [(&'static str, &'static str, osprey::imaging::TensorSpec); 3] {
    use osprey::imaging::{Elem, Fit, Layout, TensorSpec};
    let spec = |width, height, fit, elem, std| TensorSpec { width, height, fit, pad: 114, layout: Layout::Nhwc, bgr: false, elem, mean: [0.0; 3], std: [std; 3] };
    [
        ("/v1/detect", "yolov5s", spec(640, 640, Fit::Letterbox, Elem::F32, 255.0)),
        ("/v1/detect/fast", "ssd_mobilenet_v2", spec(300, 300, Fit::Stretch, Elem::U8, 1.0)),
        ("/v1/classify", "efficientnet_lite3", spec(280, 280, Fit::Stretch, Elem::U8, 1.0)),
    ]
}

/// Median of 15 runs of `f` in ms, after one run to warm it up.
fn warm_median_ms(f: &dyn Fn()) -> f64 {
    f();
    load::median_ms(15, &mut || f())
}

/// Osprey's preparation of the 12 MP photo for each route's model input, in
/// this process on one thread: decoded in full then resized (as before), or
/// decoded at the reduced scale the host picks. Median of 15 each.
fn prep_times() -> String {
    use osprey::imaging;
    let mut s = format!(
        "Osprey's preparation of {BIG} (decode + resize into the model input, ms, median of 15 on one thread, this process):\n\n\
         | route | model input | full decode | reduced-scale decode | ratio |\n|---|---|---:|---:|---:|\n"
    );
    let bytes = osprey_tests::image(BIG);
    for (route, _, sp) in &route_models() {
        let full = warm_median_ms(&|| {
            let img = imaging::decode(&bytes, 40_000_000).expect("decode");
            imaging::to_tensor(&img, sp).expect("tensor");
        });
        let scaled = warm_median_ms(&|| {
            imaging::decode_to_tensor(&bytes, 40_000_000, sp).expect("decode to tensor");
        });
        let _ = writeln!(s, "| {route} | {}x{} | {full:.1} | {scaled:.1} | {:.2}x |", sp.width, sp.height, scaled / full);
    }
    s.push('\n');
    s
}

/// Each model's run alone on dog.jpg's input, in this process (the ONNX
/// Runtime every stack runs), on one thread and on every core: what a
/// request costs with nothing around the model. It bounds every stack: at
/// saturation no server does better than the cores each running one
/// single-thread run after another, nor, at c=1, than a run on every core.
/// Every core is measured both ways ONNX Runtime offers, a pool of the
/// session's own (what the peers run) and the process's shared pool (what
/// osprey runs a lone request on), and the faster counts. Median of 15
/// after one warm-up run, before any server starts.
struct Ceiling {
    route: &'static str,
    one_thread_ms: f64,
    all_cores_ms: f64,
}

fn model_runs() -> (String, Vec<Ceiling>) {
    use osprey::imaging;
    use osprey::nn::{Batching, Identity, LoadSpec, Model, Target, Threads};
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut s = String::from(
        "The model run alone (ONNX Runtime in this process on dog.jpg's input, ms, median of 15), and the ceiling it sets \
         for any server on these cores: saturation ≤ cores / one-thread run, p50 at c=1 ≥ the faster run on every core:\n\n\
         | route | model | 1 thread | every core, session's own pool | every core, shared pool | ceiling req/s |\n|---|---|---:|---:|---:|---:|\n",
    );
    let photo = osprey_tests::image("dog.jpg");
    let mut ceilings = Vec::new();
    for (route, name, sp) in route_models() {
        let file = osprey_tests::repo().join(format!("models/{name}/model.onnx"));
        let (input, _, _) = imaging::decode_to_tensor(&photo, 40_000_000, &sp).expect("dog.jpg into the model input");
        // `Auto`, one session: a lone run goes to the shared pool.
        let time = |threads: Threads| {
            let id = Identity { name: name.into(), version: "1".into(), file: file.clone(), sha256: String::new() };
            let load = LoadSpec { target: Target::Cpu, instances: 1, threads, batching: Batching::default() };
            let model = Model::load(id, vec![], &load).unwrap_or_else(|e| panic!("{name}: {e} (run `make setup`)"));
            warm_median_ms(&|| drop(model.run(vec![("input".into(), input.clone())]).expect("model run")))
        };
        let (one_thread_ms, own_pool_ms, shared_pool_ms) = (time(Threads::Own(1)), time(Threads::Own(cores)), time(Threads::Auto));
        let _ = writeln!(s, "| {route} | {name} | {one_thread_ms:.1} | {own_pool_ms:.1} | {shared_pool_ms:.1} | {:.1} |", cores as f64 * 1e3 / one_thread_ms);
        ceilings.push(Ceiling { route, one_thread_ms, all_cores_ms: own_pool_ms.min(shared_pool_ms) });
    }
    s.push('\n');
    (s, ceilings)
}

/// The stacks to run, osprey first (its answers are the reference).
fn stacks() -> Vec<Stack> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let main = env("OSPREY_BENCH_CONFIG").unwrap_or_else(|| osprey_tests::repo().join("config/osprey.toml"));
    let batching = env("OSPREY_BENCH_BATCH_CONFIG").unwrap_or_else(|| osprey_tests::repo().join("tests/bench/osprey-batching.toml"));
    let mut all = vec![
        Stack { id: "osprey", name: OSPREY, kind: Kind::Osprey, config: Some(main), threads: 0 },
        Stack { id: "batching", name: BATCHING, kind: Kind::Osprey, config: Some(batching), threads: 0 },
        Stack { id: "flask1", name: FLASK1, kind: Kind::Flask, config: None, threads: 1 },
        Stack { id: "flask2", name: FLASK2, kind: Kind::Flask, config: None, threads: 2 },
        Stack { id: "fastapi1", name: FASTAPI1, kind: Kind::FastApi, config: None, threads: 1 },
        Stack { id: "fastapi2", name: FASTAPI2, kind: Kind::FastApi, config: None, threads: 2 },
    ];
    let only = std::env::var("OSPREY_BENCH_STACKS").unwrap_or_default();
    all.retain(|s| only.is_empty() || only.split(',').any(|o| o.trim() == s.id));
    all
}

/// A server of one stack on a free loopback port; stopped when dropped.
struct Running {
    base: String,
    pid: u32,
    _osprey: Option<load::Server>,
    _peer: Option<Peer>,
}

impl Running {
    fn start(stack: &Stack) -> Running {
        if stack.kind == Kind::Osprey {
            let config = stack.config.as_deref().expect("osprey has a config");
            let server = load::Server::start(&osprey_tests::repo().join("target/release/osprey"), config);
            return Running { base: format!("http://{}", server.addr), pid: server.pid(), _osprey: Some(server), _peer: None };
        }
        let peer = Peer::start(stack);
        Running { base: format!("http://127.0.0.1:{}", peer.port), pid: peer.child.id(), _osprey: None, _peer: Some(peer) }
    }
}

/// gunicorn or uvicorn from the peers' venv, in a process group of its own
/// so that stopping it stops its workers too.
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn start(stack: &Stack) -> Peer {
        let repo = osprey_tests::repo();
        let venv = std::env::var_os("OSPREY_PEERS_VENV")
            .map_or_else(|| osprey::nn::runtime::cache_dir().join("venv-peers"), PathBuf::from);
        let dir = repo.join("target/bench-peers");
        let ready = dir.join(format!("ready-{}", stack.id));
        let _ = std::fs::remove_dir_all(&ready);
        std::fs::create_dir_all(&ready).expect("ready folder");
        let log_path = dir.join(format!("{}.log", stack.id));
        let log = std::fs::File::create(&log_path).expect("peer log");
        let port = free_port();
        let (workers, port_s) = (WORKERS.to_string(), port.to_string());
        let mut cmd = match stack.kind {
            Kind::Flask => {
                let mut c = Command::new(venv.join("bin/gunicorn"));
                c.args(["--workers", &workers, "--bind", &format!("127.0.0.1:{port}"), "--timeout", "120"]);
                c.args(["--chdir", "tests/bench", "flask_app:app"]);
                c
            }
            _ => {
                let mut c = Command::new(venv.join("bin/uvicorn"));
                c.args(["fastapi_app:app", "--workers", &workers, "--host", "127.0.0.1", "--port", &port_s]);
                c.args(["--app-dir", "tests/bench", "--no-access-log"]);
                c
            }
        };
        let child = cmd
            .current_dir(&repo)
            .env("OSPREY_PEER_READY_DIR", &ready)
            .env("PEERS_ORT_THREADS", stack.threads.to_string())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run `make bench-deps`)", venv.display()));
        let mut peer = Peer { child, port };
        peer.wait_ready(&ready, &log_path);
        peer
    }

    /// Every worker has loaded and warmed its models, and /healthz answers.
    fn wait_ready(&mut self, ready: &Path, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(180);
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("peer exited ({status}) before it was ready: see {}", log.display());
            }
            let workers = std::fs::read_dir(ready).map_or(0, Iterator::count);
            if workers >= WORKERS && reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "peer not ready after 180 s: see {}", log.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| Command::new("kill").args([sig, "--", &group]).stderr(Stdio::null()).status();
        let _ = signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Workers that outlive their master, or a master that ignored TERM.
        let _ = signal("-KILL");
        let _ = self.child.wait();
    }
}

/// Whether the server answers a repeated request from its result cache.
fn cache_hits(url: &str, content_type: &str, body: &[u8]) -> bool {
    let client = reqwest::blocking::Client::new();
    let post = || client.post(url).header("content-type", content_type).body(body.to_vec()).send().ok();
    let _ = post();
    post().is_some_and(|r| r.headers().get("x-osprey-cache").is_some_and(|v| v == "hit"))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// One level: the load generator's figures, the CPU cores the server's
/// process tree used meanwhile, and the cores that processes other than the
/// server and this bench used (a build beside the bench skews it), all
/// sampled at the window's edges.
#[allow(clippy::too_many_arguments)]
fn measure(url: &str, content_type: &str, body: &[u8], n: usize, w: Window, root: u32, distinct: bool) -> (Stats, f64, f64) {
    let sampler = std::thread::spawn(move || {
        std::thread::sleep(w.warmup);
        // This process alone: the servers are its children, counted in `root`'s tree.
        let own = || cpu_seconds(std::process::id()).unwrap_or(f64::NAN);
        let before = (tree_cpu_seconds(root), own(), machine_busy_seconds());
        std::thread::sleep(w.measure);
        let after = (tree_cpu_seconds(root), own(), machine_busy_seconds());
        let secs = w.measure.as_secs_f64();
        let server = (after.0 - before.0) / secs;
        let others = (after.2 - before.2) / secs - server - (after.1 - before.1) / secs;
        (server, others.max(0.0))
    });
    let stats = if distinct { load::http_distinct(url, content_type, body, n, w) } else { load::http(url, content_type, body, n, w) };
    let (server, others) = sampler.join().expect("CPU sampler");
    (stats, server, others)
}

/// Busy CPU seconds of the whole machine since boot (/proc/stat, all but idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find_map(|l| l.strip_prefix("cpu ")) else { return f64::NAN };
    let v: Vec<f64> = cpu.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    (v.iter().take(8).sum::<f64>() - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0)) / 100.0
}

fn peak_rss_tree_mib(root: u32) -> f64 {
    tree(root).into_iter().map(load::peak_rss_mib).filter(|v| v.is_finite()).sum()
}

/// Proportional set size: shared pages split between the processes sharing them.
fn pss_tree_mib(root: u32) -> f64 {
    let pss = |pid: u32| -> Option<f64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let line = text.lines().find_map(|l| l.strip_prefix("Pss:"))?;
        Some(line.trim().trim_end_matches("kB").trim().parse::<f64>().ok()? / 1024.0)
    };
    tree(root).into_iter().filter_map(pss).sum()
}

/// Each route's answer on each check photo.
fn answers(base: &str) -> Vec<(String, Value)> {
    let client = reqwest::blocking::Client::new();
    let mut out = Vec::new();
    for route in ROUTES {
        for (photo, content_type) in PHOTOS {
            let answer = load::one(&client, &format!("{base}{route}"), content_type, &osprey_tests::image(photo));
            out.push((format!("{route} {photo}"), answer));
        }
    }
    out
}

/// Panics unless `got` tells what osprey's answers tell: a benchmark of
/// stacks that compute different things would compare nothing.
fn check(stack: &str, reference: &[(String, Value)], got: &[(String, Value)]) {
    let mut problems = Vec::new();
    for ((what, want), (_, have)) in reference.iter().zip(got) {
        // The 12 MP photos go through two different reduced-scale decoders
        // (libjpeg-turbo 3.1 at 1/8 in osprey, Pillow's libjpeg with `draft`)
        // before uint8 models: seen there, the SSD's car at 0.79 against 0.84
        // and the 5th class swapped. Their boxes and best class must agree.
        let loose = what.contains("12mp");
        if let Err(why) = same_answer(want, have, loose) {
            problems.push(format!("  {what}: {why}\n    osprey: {want}\n    {stack}: {have}"));
        }
    }
    assert!(problems.is_empty(), "{stack} answers differently from osprey:\n{}", problems.join("\n"));
    eprintln!("   answers match osprey's on {} route/photo pairs", got.len());
}

fn same_answer(want: &Value, have: &Value, loose: bool) -> Result<(), String> {
    for key in ["model", "image"] {
        if want[key] != have[key] {
            return Err(format!("`{key}` differs"));
        }
    }
    if let Some(top) = want["top"].as_array() {
        return same_top(top, have["top"].as_array().ok_or("no `top`")?, loose);
    }
    let want_all = want;
    let (want, have) = (want["detections"].as_array().ok_or("no detections")?, have["detections"].as_array().ok_or("no `detections`")?);
    if want.len() != have.len() {
        return Err(format!("{} detections, osprey has {}", have.len(), want.len()));
    }
    let image = &want_all["image"];
    let side = image["width"].as_f64().unwrap_or(0.0).max(image["height"].as_f64().unwrap_or(0.0));
    for d in want {
        if !have.iter().any(|h| same_detection(d, h, side, if loose { 0.1 } else { 0.05 })) {
            return Err(format!("nothing matches osprey's {}", d));
        }
    }
    Ok(())
}

/// Same label, score within 0.05, every edge within 2 px or 1% of the photo's
/// longer `side`. Decoders and resizers differ by a grey level here and there,
/// and the SSD is a uint8-quantised model: its box edges move in steps of
/// ~0.6% of the photo when an input pixel rounds the other way.
fn same_detection(want: &Value, have: &Value, side: f64, score_tolerance: f64) -> bool {
    let nums = |v: &Value| -> Vec<f64> { v["box"].as_array().map(|b| b.iter().filter_map(Value::as_f64).collect()).unwrap_or_default() };
    let (a, b) = (nums(want), nums(have));
    let tolerance = f64::max(2.0, 0.01 * side);
    want["label"] == have["label"]
        && (want["score"].as_f64().unwrap_or(-1.0) - have["score"].as_f64().unwrap_or(1.0)).abs() <= score_tolerance
        && a.len() == 4
        && b.len() == 4
        && a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tolerance)
}

/// Same best class, its score within 0.08, and the same set of top classes:
/// the model's probabilities are uint8 steps of 1/256, and below the best
/// class near-equal ones swap places on a slightly different input (on
/// dog.jpg the Pillow-decoded JPEG moves the best score by ~0.05).
fn same_top(want: &[Value], have: &[Value], loose: bool) -> Result<(), String> {
    let ids = |v: &[Value]| -> Vec<u64> {
        let mut ids: Vec<u64> = v.iter().filter_map(|c| c["class_id"].as_u64()).collect();
        ids.sort_unstable();
        ids
    };
    let (w, h) = (want.first().ok_or("osprey has no classes")?, have.first().ok_or("no classes")?);
    let close = (w["score"].as_f64().unwrap_or(-1.0) - h["score"].as_f64().unwrap_or(1.0)).abs() <= 0.08;
    if w["label"] != h["label"] || !close {
        return Err(format!("best class {} ({}), osprey's {} ({})", h["label"], h["score"], w["label"], w["score"]));
    }
    if !loose && ids(want) != ids(have) {
        return Err("not the same top classes".into());
    }
    Ok(())
}

/// What the run was: machine, window, how each stack is set up.
fn preamble(w: Window) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let mut s = String::from("# osprey against the peers\n\n");
    let _ = writeln!(
        s,
        "{cores} cores; load average {load} when the run began; window {:.0} s after {:.0} s of warm-up per cell; \
         one load generator (this process, one thread) for every stack; every request a photo no earlier request \
         sent (a number after the image's end, so osprey's result cache never answers), except in the cache-hit rows.\n",
        w.measure.as_secs_f64(),
        w.warmup.as_secs_f64()
    );
    s.push_str(
        "- osprey: `target/release/osprey serve` on config/osprey.toml (its session and thread defaults), batching off; \
         osprey +batching: `max_batch` on YOLO and EfficientNet (tests/bench/osprey-batching.toml).\n\
         - flask+gunicorn: `gunicorn --workers 2` (sync: one request at a time per worker), each worker with one ONNX \
         Runtime session per model, 1 or 2 intra-op threads (2x1, 2x2), no spinning.\n\
         - fastapi+uvicorn: `uvicorn --workers 2`, the work in Starlette's thread pool, sessions as Flask's.\n\
         - Every stack decodes a JPEG much larger than the model input at 1/2, 1/4 or 1/8 scale (osprey: libjpeg-turbo \
         in the host; the peers: Pillow's `draft()`), never below the size it is resized to.\n\
         - CPU cores = user+sys seconds of the server's process tree in the window / window. Peak RSS = sum of VmHWM \
         over the tree after all of its rows (see the lines below the table).\n\n",
    );
    s
}

/// The one markdown table, with marked rows for what was not measured.
fn table(rows: &[Row]) -> String {
    let mut s = String::from("| route | photo | stack | c | req/s | p50 ms | p99 ms | CPU cores |\n");
    s.push_str("|---|---|---|---:|---:|---:|---:|---:|\n");
    let measured = |stack: &str| rows.iter().any(|r| r.stack == stack);
    for route in ROUTES {
        for r in rows.iter().filter(|r| r.route == route) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
                r.route, r.photo, r.stack, r.concurrency, r.stats.per_sec, r.stats.p50_ms, r.stats.p99_ms, r.cores
            );
        }
        if !measured(CACHE_HIT) {
            let _ = writeln!(s, "| {route} | dog.jpg | {CACHE_HIT} ¹ | 1/8/32 | TODO | TODO | TODO | TODO |");
        }
        if !measured(BATCHING) {
            let _ = writeln!(s, "| {route} | both | {BATCHING} ² | 1/8/32 | TODO | TODO | TODO | TODO |");
        }
    }
    s
}

fn footnotes(rows: &[Row]) -> String {
    let mut s = String::new();
    if !rows.iter().any(|r| r.stack == CACHE_HIT) {
        s.push_str(
            "\n¹ Not measured: osprey's second answer to the same photo had no `x-osprey-cache: hit` (no result \
             cache in this build, or off in this config), or osprey did not run.\n",
        );
    }
    if !rows.iter().any(|r| r.stack == BATCHING) {
        s.push_str(
            "\n² Not measured: run with `OSPREY_BENCH_BATCH_CONFIG=<config with batching on>` (default \
             tests/bench/osprey-batching.toml) and without `OSPREY_BENCH_STACKS` leaving it out.\n",
        );
    }
    s
}

fn memory_table(memory: &[Memory]) -> String {
    let after = std::env::var("OSPREY_BENCH_RSS_AFTER").unwrap_or_else(|_| "1000".into());
    let mut s = format!("\n| stack | peak RSS MiB (sum of VmHWM) | RSS after {after} requests MiB |\n|---|---:|---:|\n");
    for m in memory {
        let _ = writeln!(s, "| {} | {:.0} | {:.0} |", m.stack, m.peak_mib, m.after_mib);
    }
    s
}

/// The goals, osprey against the better peer (the best of the four
/// peer stacks on each figure), each marked met or MISSED.
fn summary(rows: &[Row], memory: &[Memory], ceilings: &[Ceiling], w: Window) -> String {
    let mut s = String::from(
        "\nGoals against the better peer (the best of the four peer stacks on each figure; saturation = the best \
         req/s over the levels measured): saturation ≥ 1.2x on /v1/detect/fast and /v1/classify and ≥ 1.05x on /v1/detect \
         with dog.jpg, ≥ 2x on /v1/detect/fast and /v1/classify with the 12 MP photo; p50 at c=1 ≤ 0.65x; peak RSS \
         ≤ 0.5x the Flask stack's and ≤ 0.8x FastAPI's. osprey = the plain osprey rows (no cache hits, batching off).\n\n",
    );
    for route in ROUTES {
        for photo in MEASURED {
            if let Some(line) = goals(rows, route, photo, w) {
                let _ = writeln!(s, "- {route}, {photo}: {line}");
            }
            if let (Some(c), "dog.jpg") = (ceilings.iter().find(|c| c.route == route), photo) {
                let _ = writeln!(s, "  - {}", ceiling(rows, route, c));
            }
        }
    }
    // The peer's lighter configuration counts: the goal is against its best.
    let peak = |names: &[&str]| memory.iter().filter(|m| names.contains(&m.stack)).map(|m| m.peak_mib).fold(f64::NAN, f64::min);
    let ours = peak(&[OSPREY]);
    for (peer, names, goal) in [("the Flask stack's", [FLASK1, FLASK2], 0.5), ("FastAPI's", [FASTAPI1, FASTAPI2], 0.8)] {
        let ratio = ours / peak(&names);
        if ratio.is_finite() {
            let _ = writeln!(
                s,
                "- peak RSS, all three models: osprey {ours:.0} MiB = {ratio:.2}x {peer} {:.0} MiB (goal ≤ {goal}x: {})",
                peak(&names),
                mark(ratio <= goal)
            );
        }
    }
    s
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The saturation goal for a route and photo, if the issue sets one.
fn saturation_goal(route: &str, photo: &str) -> Option<f64> {
    match (route, photo == BIG) {
        ("/v1/detect", false) => Some(1.05),
        ("/v1/detect", true) => None,
        (_, false) => Some(1.2),
        (_, true) => Some(2.0),
    }
}

/// The best ratios any server could reach against the better peer on
/// dog.jpg, if everything but the model run cost nothing.
fn ceiling(rows: &[Row], route: &str, c: &Ceiling) -> String {
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let peers = rows.iter().filter(|r| r.route == route && r.photo == "dog.jpg" && PEERS.contains(&r.stack));
    let best_rate = peers.clone().map(|r| r.stats.per_sec).fold(f64::NAN, f64::max);
    let best_p50 = peers.filter(|r| r.concurrency == 1).map(|r| r.stats.p50_ms).fold(f64::NAN, f64::min);
    format!(
        "ceiling (the model run alone, nothing else): saturation ≤ {:.2}x the better peer, p50 at c=1 ≥ {:.2}x",
        cores * 1e3 / c.one_thread_ms / best_rate,
        c.all_cores_ms / best_p50
    )
}

/// One route and photo: osprey against the better peer on each figure.
fn goals(rows: &[Row], route: &str, photo: &str, w: Window) -> Option<String> {
    let here = |r: &&Row| r.route == route && r.photo == photo;
    let cell = |stack: &str, n: usize| rows.iter().filter(here).find(|r| r.stack == stack && r.concurrency == n);
    let best_rate = |stack: &str| rows.iter().filter(here).filter(|r| r.stack == stack).map(|r| r.stats.per_sec).fold(f64::NAN, f64::max);
    // The better peer on a figure: the one with the best value of it.
    let better = |value: &dyn Fn(&str) -> f64, lower: bool| -> Option<(&str, f64)> {
        let ok = PEERS.into_iter().map(|p| (p, value(p))).filter(|(_, v)| v.is_finite());
        if lower {
            ok.min_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            ok.max_by(|a, b| a.1.total_cmp(&b.1))
        }
    };
    let o1 = cell(OSPREY, 1)?;
    let mut parts = Vec::new();
    if let Some((p, v)) = better(&best_rate, false) {
        let ratio = best_rate(OSPREY) / v;
        let goal = saturation_goal(route, photo).map_or("no goal".to_string(), |g| format!("goal ≥ {g}x: {}", mark(ratio >= g)));
        parts.push(format!("saturation {:.1} req/s = {ratio:.2}x {p}'s {v:.1} ({goal})", best_rate(OSPREY)));
    }
    if let Some((p, v)) = better(&|p| cell(p, 1).map_or(f64::NAN, |r| r.stats.p50_ms), true) {
        let ratio = o1.stats.p50_ms / v;
        parts.push(format!("p50 at c=1 {ratio:.2}x {p}'s (goal ≤ 0.65x: {})", mark(ratio <= 0.65)));
    }
    let p99 = better(&|p| cell(p, 32).map_or(f64::NAN, |r| r.stats.p99_ms), true);
    if let (Some((p, v)), Some(o32)) = (p99, cell(OSPREY, 32)) {
        let ratio = o32.stats.p99_ms / v;
        // A request of the window's first round at c=32 can take longer than warm-up + window.
        let cut = (w.warmup + w.measure).as_secs_f64() * 1e3 * 0.8;
        let note = if v >= cut || o32.stats.p99_ms >= cut { ", cut short by the window: set OSPREY_BENCH_SECS=30" } else { "" };
        parts.push(format!("p99 at c=32 {ratio:.2}x {p}'s (no goal{note})"));
    }
    Some(parts.join("; "))
}
