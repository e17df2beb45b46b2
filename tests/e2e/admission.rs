//! Admission by predicted wait: when a request would wait for a turn and the
//! wait plus its own run is predicted past its deadline, it is refused at
//! once (503, `Retry-After`) instead of waiting the whole deadline for a 504.
//!
//! One turn (`max_inflight = 1`) and a plugin that loops until its route's
//! 300 ms deadline stops it: every turn is held 300 ms, so a request queued
//! behind a running one cannot finish in time.

use std::time::{Duration, Instant};

use super::client;

const CONFIG: &str = r#"
[server]
max_inflight = 1
plugin_memory_mib = 64

[plugins.misbehave]
file = "REPO/target/wasm32-wasip2/plugin/misbehave.wasm"

[[routes]]
path = "/t/loop"
deadline_ms = 300
cache_ttl_s = 0
stages = [{ plugin = "misbehave", settings = { mode = "loop" } }]
"#;

fn call(url: &str) -> (u16, Option<String>, String, Duration) {
    let started = Instant::now();
    let resp = client().post(url).header("content-type", "image/png").body(osprey_tests::image("chelsea.png")).send().unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.text().unwrap(), started.elapsed())
}

#[test]
fn a_request_that_cannot_finish_in_time_is_refused_at_once() {
    let dir = std::env::temp_dir().join(osprey_tests::unique_name("osprey-admission"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("osprey.toml");
    std::fs::write(&config, CONFIG.replace("REPO", &osprey_tests::repo().display().to_string())).unwrap();
    let server = osprey_tests::start(&config);
    let url = server.url("/t/loop");

    // The first turn teaches the estimate: held for the whole 300 ms.
    assert_eq!(call(&url).0, 504);

    // One request holds the turn; five arrive behind it.
    let running = std::thread::spawn({
        let url = url.clone();
        move || call(&url)
    });
    std::thread::sleep(Duration::from_millis(60));
    let queued: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || call(&url))
        })
        .collect();
    let queued: Vec<_> = queued.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(running.join().unwrap().0, 504, "the running request ends at its deadline");
    for (status, retry, body, took) in &queued {
        assert_eq!(*status, 503, "refused, not left to time out in the queue: {body}");
        assert!(body.contains("\"overloaded\"") && body.contains("past the"), "{body}");
        assert!(retry.is_some(), "a refusal says when to retry");
        assert!(*took < Duration::from_millis(200), "refused at once, not after waiting: {took:?}");
    }
    let metrics = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("osprey_admission_refused_total{route=\"/t/loop\"} 5"), "{metrics}");
    std::fs::remove_dir_all(&dir).unwrap();
}
