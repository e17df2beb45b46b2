//! The figures of a gateway and its nodes (issue 13, item 7), on a network of
//! Linux namespaces made by `tests/src/netns.rs` (the gateway and the load
//! generator in the public namespace, each node in its own; on loopback
//! where namespaces cannot be made, and the table says which):
//! - **gateway overhead**: p50 at c=1 and req/s at c=`OSPREY_FLEET_SATURATE`
//!   (default 8), straight at a node and through the gateway to that node;
//! - **failover**: 4 clients through the gateway to two nodes, one killed
//!   with SIGKILL: failed requests (should be 0), and for how long after the
//!   kill clients saw more than twice the p99 they had before it (the time
//!   to the end of the last such request); then the node restarted, the time
//!   from its listening to its first answer through the gateway;
//! - **one node against two**: each node pinned to a core of its own
//!   (`taskset -c 0`, `-c 1`) with `inference_threads = 1`, req/s through the
//!   gateway with one node in its pool and with both (the gateway and the
//!   load generator are not pinned: on a 2-core machine they share the
//!   nodes' cores, and the table says how many cores there are);
//! - **bytes per request**: what crossed the node's link per forwarded
//!   request (its veth's counters, health checks included), beside the
//!   upload's and the answer's sizes as the client saw them.
//!
//! Every request sends the photo with a number of its own after the image's
//! end, so no result cache answers. Run: `make bench-fleet`, or `cargo bench
//! -p osprey-tests --bench fleet` once `make setup` ran (as root, for
//! namespaces). Environment: `OSPREY_BENCH_SECS` (window, default 5),
//! `OSPREY_FLEET_ROUTE` (default `/v1/detect/fast`), `OSPREY_FLEET_SATURATE`,
//! `OSPREY_FLEET_FIGURES` (a comma list of `overhead,failover,scaling,bytes`),
//! `OSPREY_NETNS=off` (loopback). The table goes to stdout and
//! `target/bench-fleet.md`.
//!
//! Figures to come are one more entry of `FIGURES` each: a tunnel's
//! reconnect time (branch `tunnel`: a node behind NAT, `Network::cut` then
//! `restore`, timed from the restore to its first answer through the
//! gateway) and the bytes per request of a remote model (`link_bytes`
//! around the requests of a route whose model is remote).

// Its `Server` and `one` are the other benches': this one starts its servers in namespaces.
#[allow(dead_code)]
#[path = "serving/load.rs"]
mod load;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use load::Window;
use osprey_tests::netns::{Host, Network, Reach};
use osprey_tests::process::{binary, Osprey};

/// Measures one figure and returns its table.
type Figure = fn(&Bench) -> String;

/// Every figure: its name for `OSPREY_FLEET_FIGURES`, and what measures it.
const FIGURES: [(&str, Figure); 4] =
    [("overhead", overhead), ("failover", failover), ("scaling", scaling), ("bytes", bytes)];

/// The port of every server in its namespace (on loopback: any).
const PORT: u16 = 8080;

struct Bench {
    w: Window,
    route: String,
    photo: Vec<u8>,
}

fn main() {
    let route = std::env::var("OSPREY_FLEET_ROUTE").unwrap_or_else(|_| "/v1/detect/fast".into());
    let bench = Bench { w: Window::from_env(), route, photo: osprey_tests::image("dog.jpg") };
    let chosen = std::env::var("OSPREY_FLEET_FIGURES").ok();
    let wanted = |name: &str| chosen.as_deref().is_none_or(|c| c.split(',').any(|f| f.trim() == name));
    let mut report = preamble(&bench);
    for (name, measure) in FIGURES.iter().filter(|(name, _)| wanted(name)) {
        eprintln!("== {name}");
        report.push_str(&measure(&bench));
    }
    println!("\n{report}");
    let out = osprey_tests::repo().join("target/bench-fleet.md");
    std::fs::write(&out, &report).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    eprintln!("wrote {}", out.display());
}

fn preamble(b: &Bench) -> String {
    let mode = if Network::new().namespaces() { "network namespaces on one bridge" } else { "loopback (namespaces could not be made)" };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "# Osprey fleet bench\n\nRoute `{}`, dog.jpg ({} bytes) made unique per request; {} cores; hosts on {mode}; \
         windows of {:.0} s after {:.0} s of warm-up; load average at the start: {}.\n",
        b.route,
        b.photo.len(),
        cores,
        b.w.measure.as_secs_f64(),
        b.w.warmup.as_secs_f64(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// A node's process: the default config, or the pinned one on `core`.
fn start_node(host: &Host, core: Option<usize>) -> Osprey {
    match core {
        None => Osprey::start_in(host, &repo_config(), host.listen_addr(PORT)),
        Some(core) => {
            let mut command = host.command("taskset");
            command.args(["-c", &core.to_string()]).arg(binary());
            Osprey::start_command(command, &pinned_config(), host.listen_addr(PORT))
        }
    }
}

fn repo_config() -> PathBuf {
    osprey_tests::repo().join("config/osprey.toml")
}

/// The default config with one inference thread, its paths made absolute
/// (they are relative to the file, which moves to a temporary folder).
fn pinned_config() -> PathBuf {
    let repo = osprey_tests::repo();
    let text = std::fs::read_to_string(repo_config()).expect("config/osprey.toml");
    let text = text.replace("\"../", &format!("\"{}/", repo.display())).replacen("[server]\n", "[server]\ninference_threads = 1\n", 1);
    write_config("pinned-node", &text)
}

/// A gateway whose pool `gpu` is `nodes`, serving the bench's route.
fn gateway(net: &Network, route: &str, nodes: &[&Osprey]) -> Osprey {
    let list = nodes.iter().map(|n| format!("\"{}\"", n.url(""))).collect::<Vec<_>>().join(", ");
    let text = format!("[admin]\nwatch = false\n\n[upstreams.gpu]\nnodes = [{list}]\n\n[[routes]]\npath = \"{route}\"\nupstream = \"gpu\"\ncache_ttl_s = 0\n");
    Osprey::start_in(net.public(), &write_config("gateway", &text), net.public().listen_addr(PORT + 1 + GATEWAYS.fetch_add(1, Ordering::Relaxed) as u16))
}

/// Gateways started: each takes a port of its own in the public namespace.
static GATEWAYS: AtomicU64 = AtomicU64::new(0);

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(osprey_tests::unique_name("osprey-bench-fleet"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The load generator's figures for `url`, from the public namespace.
fn measure(net: &Network, b: &Bench, url: String, concurrency: usize) -> load::Stats {
    let (photo, w) = (b.photo.clone(), b.w);
    net.public().run(move || load::http_distinct(&url, "image/jpeg", &photo, concurrency, w))
}

fn saturation() -> usize {
    std::env::var("OSPREY_FLEET_SATURATE").ok().and_then(|v| v.parse().ok()).unwrap_or(8)
}

fn overhead(b: &Bench) -> String {
    let mut net = Network::new();
    let host = net.add_host("node0", Reach::Open);
    let node = start_node(&host, None);
    let gw = gateway(&net, &b.route, &[&node]);
    let c = saturation();
    let (direct1, via1) = (measure(&net, b, node.url(&b.route), 1), measure(&net, b, gw.url(&b.route), 1));
    let (direct_n, via_n) = (measure(&net, b, node.url(&b.route), c), measure(&net, b, gw.url(&b.route), c));
    let mut s = String::from("\n## Gateway overhead (one node)\n\n| path | p50 c=1 (ms) | p99 c=1 (ms) | req/s c=");
    let _ = writeln!(s, "{c} | p50 c={c} (ms) |\n|---|---:|---:|---:|---:|");
    for (name, one, many) in [("straight at the node", direct1, direct_n), ("through the gateway", via1, via_n)] {
        let _ = writeln!(s, "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |", one.p50_ms, one.p99_ms, many.per_sec, many.p50_ms);
    }
    let _ = writeln!(
        s,
        "\nAdded p50 at c=1: {:+.1} ms; throughput through the gateway: {:.0}% of the node's.",
        via1.p50_ms - direct1.p50_ms,
        100.0 * via_n.per_sec / direct_n.per_sec
    );
    s
}

/// One request of the failover load: when it began and ended, and its status.
struct Sample {
    start: Instant,
    end: Instant,
    status: u16,
}

fn failover(b: &Bench) -> String {
    let mut net = Network::new();
    let hosts: Vec<Host> = (0..2).map(|i| net.add_host(&format!("node{i}"), Reach::Open)).collect();
    let mut nodes: Vec<Osprey> = hosts.iter().map(|h| start_node(h, None)).collect();
    let gw = gateway(&net, &b.route, &nodes.iter().collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, photo, stop) = (gw.url(&b.route), b.photo.clone(), stop.clone());
            net.public().spawn(move || samples(&url, &photo, &stop))
        })
        .collect();
    std::thread::sleep(b.w.warmup + b.w.measure / 2);
    let killed = Instant::now();
    nodes[0].kill();
    std::thread::sleep(b.w.measure / 2 + Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let all: Vec<Sample> = clients.into_iter().flat_map(|c| c.join().expect("a client")).collect();

    let mut before: Vec<Duration> = all.iter().filter(|s| s.end < killed && s.start > killed - b.w.measure / 2).map(|s| s.end - s.start).collect();
    before.sort();
    let p99 = before.get((before.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or_default();
    let after: Vec<&Sample> = all.iter().filter(|s| s.end > killed).collect();
    let failed = after.iter().filter(|s| s.status != 200).count();
    let hit = after.iter().filter(|s| s.status != 200 || s.end - s.start > 2 * p99);
    let seen_for = hit.map(|s| s.end - killed).max().unwrap_or_default();
    let worst = after.iter().map(|s| s.end - s.start).max().unwrap_or_default();

    // The node back on its address: from its listening to its first answer.
    let (addr, url) = (nodes[0].addr, nodes[0].url(""));
    nodes[0] = Osprey::start_in(&hosts[0], &repo_config(), addr);
    let listening = Instant::now();
    let gw_url = gw.url(&b.route);
    let photo = b.photo.clone();
    let rejoined = net.public().run(move || {
        let client = reqwest::blocking::Client::new();
        while listening.elapsed() < Duration::from_secs(30) {
            let resp = client.post(&gw_url).header("content-type", "image/jpeg").body(distinct(&photo)).send().expect("POST");
            if resp.headers().get("x-osprey-node").is_some_and(|n| n.as_bytes() == url.as_bytes()) {
                return Some(listening.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    });
    format!(
        "\n## Failover: one of two nodes killed (SIGKILL) under 4 clients, default 1 s health checks\n\n\
         | requests after the kill | failed | p99 before (ms) | clients saw > 2x that for (ms) | slowest after (ms) | restarted node's first answer after listening (ms) |\n\
         |---:|---:|---:|---:|---:|---:|\n| {} | {failed} | {:.0} | {:.0} | {:.0} | {} |\n",
        after.len(),
        p99.as_secs_f64() * 1e3,
        seen_for.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        rejoined.map_or("not within 30 s".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3)),
    )
}

/// Requests in a loop until `stop`; a transport error counts as status 0.
fn samples(url: &str, photo: &[u8], stop: &AtomicBool) -> Vec<Sample> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let status = client.post(url).header("content-type", "image/jpeg").body(distinct(photo)).send().and_then(|r| {
            let status = r.status().as_u16();
            r.bytes().map(|_| status)
        });
        out.push(Sample { start, end: Instant::now(), status: status.unwrap_or(0) });
    }
    out
}

/// The photo with a number of its own after the image's end.
fn distinct(photo: &[u8]) -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut bytes = photo.to_vec();
    bytes.extend_from_slice(format!("\nfleet-{}", N.fetch_add(1, Ordering::Relaxed)).as_bytes());
    bytes
}

fn scaling(b: &Bench) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return "\n## One node against two\n\nSkipped: one core, nothing to pin a second node to.\n".into();
    }
    let mut net = Network::new();
    let hosts: Vec<Host> = (0..2).map(|i| net.add_host(&format!("node{i}"), Reach::Open)).collect();
    let nodes: Vec<Osprey> = hosts.iter().enumerate().map(|(i, h)| start_node(h, Some(i))).collect();
    let (one, two) = (gateway(&net, &b.route, &[&nodes[0]]), gateway(&net, &b.route, &[&nodes[0], &nodes[1]]));
    let c = saturation();
    let rows = [
        ("node on core 0, straight", measure(&net, b, nodes[0].url(&b.route), c)),
        ("gateway, pool of 1 (core 0)", measure(&net, b, one.url(&b.route), c)),
        ("gateway, pool of 2 (cores 0 and 1)", measure(&net, b, two.url(&b.route), c)),
    ];
    let mut s = format!(
        "\n## One node against two, each pinned to a core, `inference_threads = 1`, c={c}\n\n\
         Machine: {cores} cores; the gateway and the load generator are not pinned.\n\n| path | req/s | p50 (ms) | p99 (ms) |\n|---|---:|---:|---:|\n"
    );
    for (name, st) in &rows {
        let _ = writeln!(s, "| {name} | {:.1} | {:.1} | {:.1} |", st.per_sec, st.p50_ms, st.p99_ms);
    }
    let _ = writeln!(s, "\nTwo nodes give {:.2}x one node's throughput.", rows[2].1.per_sec / rows[1].1.per_sec);
    s
}

fn bytes(b: &Bench) -> String {
    let mut net = Network::new();
    let host = net.add_host("node0", Reach::Open);
    let node = start_node(&host, None);
    let gw = gateway(&net, &b.route, &[&node]);
    let requests = 50;
    let (url, photo) = (gw.url(&b.route), b.photo.clone());
    let before = link_bytes(&host);
    let (up, down) = net.public().run(move || {
        let client = reqwest::blocking::Client::new();
        let (mut up, mut down) = (0, 0);
        for _ in 0..requests {
            let body = distinct(&photo);
            up += body.len();
            let resp = client.post(&url).header("content-type", "image/jpeg").body(body).send().expect("POST");
            assert_eq!(resp.status(), 200);
            down += resp.bytes().expect("answer").len();
        }
        (up / requests, down / requests)
    });
    let after = link_bytes(&host);
    let mut s = format!(
        "\n## Bytes per request (forwarding the upload)\n\n| mode | to the node | from the node |\n|---|---:|---:|\n\
         | the client's upload and answer (body bytes) | {up} | {down} |\n"
    );
    match (before, after) {
        (Some((rx0, tx0)), Some((rx1, tx1))) => {
            let n = requests as u64;
            let _ = writeln!(s, "| on the node's link (IP packets, health checks included) | {} | {} |", (rx1 - rx0) / n, (tx1 - tx0) / n);
        }
        _ => s.push_str("\nOn loopback there is no link of the node's own to count bytes on.\n"),
    }
    s
}

/// Bytes received and sent on the host's link, from its namespace's
/// counters (`ip -j -s link`); `None` on loopback.
fn link_bytes(host: &Host) -> Option<(u64, u64)> {
    let ns = host.namespace()?;
    let out = std::process::Command::new("ip").args(["-j", "-s", "-n", ns, "link", "show", "eth0"]).output().expect("ip");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    let stats = &json[0]["stats64"];
    Some((stats["rx"]["bytes"].as_u64()?, stats["tx"]["bytes"].as_u64()?))
}
