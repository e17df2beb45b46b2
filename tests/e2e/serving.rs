//! Serving under load: token buckets on a clock the test moves, the result
//! cache, a full queue answered 429, and batched requests answered as if alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use osprey_tests::TestServer;
use serde_json::Value;

use super::client;

/// The token buckets' clock: moved by the test, never by sleeping.
#[derive(Clone, Default)]
struct Manual(Arc<AtomicU64>);

impl osprey::ratelimit::Clock for Manual {
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

fn server() -> &'static (TestServer, Manual) {
    static SERVER: OnceLock<(TestServer, Manual)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let clock = Manual::default();
        let server = osprey_tests::start_with(&osprey_tests::repo().join("tests/e2e/serving.toml"), Some(Box::new(clock.clone())));
        (server, clock)
    })
}

struct Answer {
    status: u16,
    cache: String,
    retry_after: Option<String>,
    json: Value,
}

fn send(path: &str, image: &str, key: Option<&str>) -> Answer {
    let mut req = client().post(server().0.url(path)).header("content-type", "image/png").body(osprey_tests::image(image));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = req.send().unwrap();
    let header = |h: &str| resp.headers().get(h).map(|v| v.to_str().unwrap().to_string());
    let (status, cache, retry_after) = (resp.status().as_u16(), header("x-osprey-cache").unwrap_or_default(), header("retry-after"));
    Answer { status, cache, retry_after, json: resp.json().unwrap() }
}

#[test]
fn token_bucket_refuses_past_the_burst_and_refills_with_time() {
    let clock = &server().1;
    for _ in 0..3 {
        assert_eq!(send("/limited", "chelsea.png", Some("alice")).status, 200);
    }
    let refused = send("/limited", "chelsea.png", Some("alice"));
    assert_eq!((refused.status, refused.json["error"]["code"].as_str()), (429, Some("rate_limited")), "{}", refused.json);
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    // Another API key has its own bucket.
    assert_eq!(send("/limited", "chelsea.png", Some("bob")).status, 200);
    // One second later, at one token a second, alice may send one more.
    clock.0.fetch_add(1000, Ordering::SeqCst);
    assert_eq!(send("/limited", "chelsea.png", Some("alice")).status, 200);
    assert_eq!(send("/limited", "chelsea.png", Some("alice")).status, 429);
}

#[test]
fn second_identical_request_is_a_cache_hit() {
    let first = send("/cached", "coffee.png", None);
    let second = send("/cached", "coffee.png", None);
    assert_eq!((first.status, first.cache.as_str()), (200, "miss"));
    assert_eq!((second.status, second.cache.as_str()), (200, "hit"));
    assert_eq!(first.json, second.json, "a hit returns the stored answer");
    // Other parameters are another answer.
    let resp = client().post(server().0.url("/cached?top=1")).header("content-type", "image/png").body(osprey_tests::image("coffee.png")).send().unwrap();
    assert_eq!(resp.headers()["x-osprey-cache"], "miss");
    // Failures are never stored.
    let bad = || client().post(server().0.url("/cached")).header("content-type", "image/png").body(b"\x89PNG broken".to_vec()).send().unwrap();
    assert_eq!(bad().status(), 415);
    let again = bad();
    assert_eq!((again.status().as_u16(), again.headers()["x-osprey-cache"].to_str().unwrap()), (415, "miss"));
}

#[test]
fn a_full_queue_is_429_with_retry_after_never_a_hang() {
    let threads: Vec<_> = (0..12).map(|_| std::thread::spawn(|| send("/queue", "chelsea.png", None))).collect();
    let answers: Vec<Answer> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok + refused.len(), answers.len(), "only 200 and 429: {:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert!(ok >= 1 && !refused.is_empty(), "{ok} ok, {} refused", refused.len());
    for r in refused {
        assert_eq!(r.json["error"]["code"], "overloaded", "{}", r.json);
        assert_eq!(r.retry_after.as_deref(), Some("1"));
    }
}

#[test]
fn batched_requests_get_the_answers_they_would_get_alone() {
    let alone = send("/batched", "dog.jpg", None);
    assert_eq!(alone.status, 200, "{}", alone.json);
    let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(|| send("/batched", "dog.jpg", None))).collect();
    for t in threads {
        let a = t.join().unwrap();
        assert_eq!(a.status, 200, "{}", a.json);
        let (got, want) = (a.json["detections"].as_array().unwrap(), alone.json["detections"].as_array().unwrap());
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["label"], w["label"]);
            for i in 0..4 {
                let (g, w) = (g["box"][i].as_f64().unwrap(), w["box"][i].as_f64().unwrap());
                assert!((g - w).abs() < 0.5, "box moved in a batch: {g} vs {w}");
            }
        }
    }
    let metrics = client().get(server().0.url("/metrics")).send().unwrap().text().unwrap();
    let batches_over_one = metrics
        .lines()
        .find(|l| l.starts_with("osprey_batch_size_bucket{le=\"1.0\",model=\"yolo_batched\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    let total = metrics
        .lines()
        .find(|l| l.starts_with("osprey_batch_size_count{model=\"yolo_batched\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(total.unwrap_or(0) > batches_over_one.unwrap_or(0), "no batch of more than one request formed:\n{metrics}");
}
