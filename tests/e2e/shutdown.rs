//! The real binary: SIGTERM stops accepting, lets requests in flight finish,
//! and exits 0. `/metrics` carries the families operators alert on.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::client;

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_zero() {
    let repo = osprey_tests::repo();
    let mut child = Command::new(repo.join("target/release/osprey"))
        .args(["serve", "--config", "config/osprey.toml", "--listen", "127.0.0.1:0"])
        .current_dir(&repo)
        .env("OSPREY_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("target/release/osprey (built by `make setup`)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the server printed its address").unwrap();
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on http://".len()..].trim().to_string();
        }
    };
    // Keep reading the log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("http://{addr}/v1/detect");
            std::thread::spawn(move || {
                let resp = client().post(url).header("content-type", "image/jpeg").body(osprey_tests::image("dog.jpg")).send().unwrap();
                (resp.status().as_u16(), resp.text().unwrap())
            })
        })
        .collect();
    // The requests are on their way (loopback); now ask the server to stop.
    std::thread::sleep(Duration::from_millis(100));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    for t in in_flight {
        let (status, body) = t.join().unwrap();
        assert_eq!(status, 200, "a request in flight at SIGTERM: {body}");
        assert!(body.contains("\"dog\""), "{body}");
    }
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
    assert!(std::net::TcpStream::connect(&addr).is_err(), "still accepting after shutdown");
}

#[test]
fn metrics_expose_requests_latency_queues_and_models() {
    let server = osprey_tests::default_server();
    let (status, _) = super::post("/v1/classify", "image/png", osprey_tests::image("chelsea.png"));
    assert_eq!(status, 200);
    let text = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    for family in [
        "osprey_requests_total{",
        "osprey_request_duration_seconds_bucket{",
        "osprey_plugin_duration_seconds_bucket{",
        "osprey_queue_wait_seconds_bucket{",
        "osprey_inference_seconds_bucket{",
        "osprey_batch_size_bucket{",
        "osprey_queue_depth{",
        "osprey_cache_lookups_total{",
        "osprey_model_loaded{",
        "osprey_snapshot_generation",
    ] {
        assert!(text.contains(family), "/metrics has no {family}:\n{text}");
    }
}
