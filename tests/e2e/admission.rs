//! Admission by predicted wait: when a request would wait for a turn and the
//! wait plus its own run is predicted past its deadline, it is refused at
//! once (503, `Retry-After`) instead of waiting the whole deadline for a 504.
//!
//! One turn (`max_inflight = 1`, `admission.toml`) and a plugin that loops
//! until its route's 300 ms deadline stops it: every turn is held 300 ms, so
//! a request queued behind a running one cannot finish in time.
//!
//! And a route with branches that waited for its turn (`branches.toml`): its
//! branches still get their own routes' deadlines, counted from when they start.

use std::time::{Duration, Instant};

use super::client;

fn call(url: &str) -> (u16, Option<String>, String, Duration) {
    let started = Instant::now();
    let resp = client().post(url).header("content-type", "image/png").body(osprey_tests::image("chelsea.png")).send().unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.text().unwrap(), started.elapsed())
}

/// A server of its own on `name`, a config beside this file.
fn serve(name: &str) -> osprey_tests::TestServer {
    osprey_tests::start(&osprey_tests::repo().join("tests/e2e").join(name))
}

#[test]
fn a_request_that_cannot_finish_in_time_is_refused_at_once() {
    let server = serve("admission.toml");
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
}

/// The bug: a branch's deadline was its route's (1.5 s here) counted from
/// when the whole request came, so a fusion that had waited 2 s for its turn
/// (of its 15) ran its branches with no time left and answered 504.
#[test]
fn branches_of_a_request_that_waited_for_its_turn_get_their_own_deadline_from_their_start() {
    use reqwest::blocking::multipart::{Form, Part};
    let server = serve("branches.toml");

    // The one turn is held for 2 s by a loop stopped at its deadline.
    let holding = std::thread::spawn({
        let url = server.url("/t/loop");
        move || call(&url)
    });
    std::thread::sleep(Duration::from_millis(100));
    let part = || Part::bytes(osprey_tests::image("dog.jpg")).mime_str("image/jpeg").unwrap();
    let started = Instant::now();
    let resp = client().post(server.url("/t/fuse")).multipart(Form::new().part("visible", part()).part("infrared", part())).send().unwrap();
    let waited = started.elapsed();
    let status = resp.status().as_u16();
    let body = resp.text().unwrap();
    assert_eq!(holding.join().unwrap().0, 504, "the loop held the turn to its deadline");
    assert!(waited > Duration::from_millis(1500), "the fusion waited past its branches' deadline for its turn: {waited:?}");
    assert_eq!(status, 200, "its branches ran in their own 1.5 s: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(!answer["detections"].as_array().unwrap().is_empty(), "dog.jpg has things to find: {answer}");
}
