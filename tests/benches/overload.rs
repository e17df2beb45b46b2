//! Overload that fails fast (issue 16): `/v1/detect` offered 2x and 10x
//! what it can answer, open loop (requests sent at a fixed rate whatever
//! the answers do, as many independent clients would), each a distinct photo
//! so the cache never answers. Prints, per load: the answers by status, the
//! share of 504s, the p50 and p99 of the answered requests, and how long a
//! refusal took. `cargo bench -p osprey-tests --bench overload`;
//! `OSPREY_BENCH_SECS` sets each window (default 10).

use std::time::{Duration, Instant};

use osprey_tests::process::{Osprey, ANY_PORT};

const ROUTE: &str = "/v1/detect";

fn main() {
    let secs: f64 = std::env::var("OSPREY_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let server = Osprey::start(&osprey_tests::repo().join("config/osprey.toml"), ANY_PORT);
    let url = server.url(ROUTE);
    let photo = osprey_tests::image("dog.jpg");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio");

    // Capacity: two clients back to back (the server has 2 cores), after a warm-up.
    runtime.block_on(closed_loop(&url, &photo, 2, Duration::from_secs(2)));
    let (answered, took) = runtime.block_on(closed_loop(&url, &photo, 2, Duration::from_secs_f64(secs)));
    let capacity = answered as f64 / took.as_secs_f64();

    println!("# Overload: {ROUTE} on dog.jpg (distinct bytes each), open loop, {secs} s per load\n");
    println!("Capacity (2 clients back to back): {capacity:.1} answers/s. Default config: deadline 10 s, max_inflight 4, max_waiting 64.\n");
    println!("| offered | sent | 200 | 503 | 429 | 504 | other | 504 share | p50 200 (ms) | p99 200 (ms) | p50 refusal (ms) | p99 refusal (ms) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for factor in [2.0, 10.0] {
        let rate = capacity * factor;
        let results = runtime.block_on(open_loop(&url, &photo, rate, Duration::from_secs_f64(secs)));
        // Let the queue drain before the next load.
        std::thread::sleep(Duration::from_secs(11));
        let count = |s: u16| results.iter().filter(|r| r.0 == s).count();
        let other = results.iter().filter(|r| ![200, 503, 429, 504].contains(&r.0)).count();
        let ms = |status: &[u16]| -> Vec<f64> {
            let mut v: Vec<f64> = results.iter().filter(|r| status.contains(&r.0)).map(|r| r.1.as_secs_f64() * 1e3).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (ok, refused) = (ms(&[200]), ms(&[503, 429]));
        println!(
            "| {factor}x ({rate:.0}/s) | {} | {} | {} | {} | {} | {other} | {:.1}% | {} | {} | {} | {} |",
            results.len(),
            count(200),
            count(503),
            count(429),
            count(504),
            100.0 * count(504) as f64 / results.len().max(1) as f64,
            pct(&ok, 50.0),
            pct(&ok, 99.0),
            pct(&refused, 50.0),
            pct(&refused, 99.0),
        );
    }
}

fn pct(sorted: &[f64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    format!("{:.0}", sorted[i])
}

/// A photo no request sent before: bytes after the JPEG's end, where decoders stop.
fn distinct(photo: &[u8]) -> Vec<u8> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = photo.to_vec();
    bytes.extend_from_slice(format!("\n{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).as_bytes());
    bytes
}

async fn post(client: &reqwest::Client, url: &str, photo: &[u8]) -> (u16, Duration) {
    let start = Instant::now();
    let status = match client.post(url).header("content-type", "image/jpeg").body(distinct(photo)).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        }
        Err(_) => 0,
    };
    (status, start.elapsed())
}

/// `clients` back to back for `window`: answers of 200 and the time taken.
async fn closed_loop(url: &str, photo: &[u8], clients: usize, window: Duration) -> (usize, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, photo) = (url.to_string(), photo.to_vec());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut ok = 0;
                while started.elapsed() < window {
                    ok += usize::from(post(&client, &url, &photo).await.0 == 200);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("client");
    }
    (ok, started.elapsed())
}

/// Requests sent at `rate` a second for `window`, each on its own, whatever
/// the earlier ones are doing: (status, time to the answer) of each.
async fn open_loop(url: &str, photo: &[u8], rate: f64, window: Duration) -> Vec<(u16, Duration)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().expect("client");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    while started.elapsed() < window {
        tick.tick().await;
        let (client, url, photo) = (client.clone(), url.to_string(), photo.to_vec());
        tasks.push(tokio::spawn(async move { post(&client, &url, &photo).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request"));
    }
    out
}
