//! Plugins and models swapped, and broken, while a client keeps asking.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;

use super::*;

/// Long enough for a loaded CI machine; the README reports the real figures.
const VISIBLE: Duration = Duration::from_secs(15);

fn rolled_back(server: &TestServer) -> u64 {
    server.shared.reload.counts().1
}

#[test]
fn twenty_four_swaps_under_load_lose_no_request() {
    let site = Site::new("swap");
    let server = Arc::new(site.serve());
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (server, stop, failures) = (server.clone(), stop.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let (status, chain, answer) = detect(&server);
                latencies.push(sent.elapsed());
                if status != 200 || answer["detections"][0]["label"] != "cat" {
                    failures.lock().unwrap().push(format!("{status} {chain} {answer}"));
                }
            }
            latencies
        })
    };
    let original = std::fs::read(site.path("plugins/ssd.wasm")).unwrap();
    let (mut plugin_times, mut model_times) = (Vec::new(), Vec::new());
    let mut newest = 1;
    for round in 0..24 {
        match round % 4 {
            0 => plugin_times.push(swap_plugin(&site, &server, &variant(&original, &format!("v{round}")))),
            1 => {
                newest += 1;
                model_times.push(add_version(&site, &server, newest));
            }
            2 => {
                let before = rolled_back(&server);
                write_file(&site.path("plugins/ssd.wasm"), b"this is not a component");
                until("rollback of a broken plugin", VISIBLE, || rolled_back(&server) > before);
                plugin_times.push(swap_plugin(&site, &server, &variant(&original, &format!("fix{round}"))));
            }
            _ => {
                let before = rolled_back(&server);
                site.add_model_version(newest + 1, b"not an onnx model");
                until("rollback of a broken model", VISIBLE, || rolled_back(&server) > before);
                std::fs::remove_dir_all(site.path(&format!("models/ssd/{}", newest + 1))).unwrap();
                until("recovery after removing the broken version", VISIBLE, || {
                    server.shared.reload.last().is_some_and(|r| matches!(r.outcome, osprey::reload::Outcome::Success { .. }))
                });
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = client.join().unwrap();
    latencies.sort();
    let served = latencies.len();
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} of {served} requests failed during the swaps: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    assert!(served >= 24, "the client loop served only {served} requests");
    plugin_times.sort();
    model_times.sort();
    eprintln!(
        "reload: {served} requests, 0 failed, latency p50 {:?} p99 {:?} during the swaps; \
         new plugin answered after {:?} (median of {}), new model version after {:?} (median of {})",
        latencies[served / 2],
        latencies[served * 99 / 100],
        plugin_times[plugin_times.len() / 2],
        plugin_times.len(),
        model_times[model_times.len() / 2],
        model_times.len()
    );
}

/// Writes a plugin build and waits until answers come from it; returns how long that took.
fn swap_plugin(site: &Site, server: &TestServer, bytes: &[u8]) -> Duration {
    let want = format!("ssd@{}", sha256_prefix(bytes));
    let landed = Instant::now();
    write_file(&site.path("plugins/ssd.wasm"), bytes);
    until(&format!("answers from {want}"), VISIBLE, || detect(server).1.contains(&want));
    landed.elapsed()
}

fn add_version(site: &Site, server: &TestServer, n: u32) -> Duration {
    let landed = Instant::now();
    site.add_model_version(n, &model_bytes());
    until(&format!("answers from model version {n}"), VISIBLE, || detect(server).2["model_version"].as_str() == Some(n.to_string().as_str()));
    landed.elapsed()
}

#[test]
fn admin_api_reports_and_reloads_behind_its_token() {
    let site = Site::new("admin");
    let server = site.serve();
    assert_eq!(admin(&server, Method::GET, "/admin/status", None).0, 401);
    assert_eq!(admin(&server, Method::GET, "/admin/status", Some("wrong-token-0123456789abcdef")).0, 401);

    let (status, s) = admin(&server, Method::GET, "/admin/status", Some(TOKEN));
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["generation"], 1);
    assert_eq!(s["plugins"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["plugins"][1]["sha256"].as_str().unwrap().len(), 64, "{s}");
    assert_eq!(s["models"][0]["version"], "1");
    assert_eq!(s["models"][0]["provider"], "CPUExecutionProvider");
    assert_eq!(s["routes"][0]["path"], "/v1/detect/fast");

    let (status, r) = admin(&server, Method::POST, "/admin/reload", Some(TOKEN));
    assert_eq!((status, r["outcome"].as_str()), (200, Some("success")), "{r}");

    // A broken config: the reload is refused with the place of the mistake, the old snapshot serves on.
    let config = std::fs::read_to_string(site.path("osprey.toml")).unwrap();
    write_file(&site.path("osprey.toml"), config.replace("conf = 0.4", "conf = 0.4, oops").as_bytes());
    let (status, r) = admin(&server, Method::POST, "/admin/reload", Some(TOKEN));
    assert_eq!((status, r["outcome"].as_str()), (422, Some("rolled_back")), "{r}");
    assert!(r["reason"].as_str().unwrap().contains("osprey.toml:"), "{r}");
    assert_eq!(detect(&server).0, 200);

    // Valid TOML, but a setting the SSD stage does not have: the plugin's own check
    // refuses it at reload, with where it is written; the old snapshot serves on.
    write_file(&site.path("osprey.toml"), config.replace("conf = 0.4", "conf = 0.4, cnof = 0.5").as_bytes());
    let (status, r) = admin(&server, Method::POST, "/admin/reload", Some(TOKEN));
    assert_eq!((status, r["outcome"].as_str()), (422, Some("rolled_back")), "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("osprey.toml:") && reason.contains("plugin 'ssd' refuses its settings") && reason.contains("unknown field `cnof`"), "{r}");
    assert_eq!(detect(&server).0, 200);
    let metrics = reqwest::blocking::get(server.url("/metrics")).unwrap().text().unwrap();
    assert!(metrics.contains("osprey_reload_total{outcome=\"rolled_back\"}"), "{metrics}");
}
