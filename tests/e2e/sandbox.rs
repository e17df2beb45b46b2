//! A plugin that traps, loops, eats memory or hands the model a malformed
//! tensor gets a precise 5xx for its own request; everyone else is served.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{client, read};
use osprey_tests::TestServer;
use serde_json::Value;

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| osprey_tests::start(&osprey_tests::repo().join("tests/e2e/sandbox.toml")))
}

fn call(path: &str) -> (u16, Value) {
    let body = osprey_tests::image("chelsea.png");
    read(client().post(server().url(path)).header("content-type", "image/png").body(body).send().unwrap())
}

fn expect(path: &str, status: u16, code: &str, says: &str) {
    let (got, answer) = call(path);
    assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{path}: {answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{path}: '{message}' should say '{says}'");
    let (good, answer) = call("/t/good");
    assert_eq!(good, 200, "good route after {path}: {answer}");
    assert_eq!(answer["detections"][0]["label"], "cat");
}

/// A plugin's own check of its settings (asked before serving) runs in a
/// sandbox as `run` does: one that loops is stopped and one that panics is
/// reported, and either fails the config's check with the stage's place.
#[test]
fn a_settings_check_that_loops_or_panics_fails_the_config_check() {
    let dir = osprey_tests::repo().join("tests/e2e");
    let text = std::fs::read_to_string(dir.join("sandbox.toml")).unwrap();
    for (mode, says) in [("loop-in-check", "its check of them ran past 2 s"), ("trap-in-check", "panicking in check on purpose")] {
        // Beside sandbox.toml, so its relative paths hold.
        let path = dir.join(format!("{}.toml", osprey_tests::unique_name(&format!(".check-{mode}"))));
        std::fs::write(&path, text.replace(r#"mode = "trap""#, &format!(r#"mode = "{mode}""#))).unwrap();
        let started = Instant::now();
        let err = osprey::cli::check(&path).map(|_| String::new()).unwrap_or_else(|e| e.to_string());
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains(&format!("{}:21:", path.display())) && err.contains("stage 1: plugin 'misbehave'") && err.contains(says), "{mode}: {err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{mode}: stopped, not waited for");
    }
}

#[test]
fn a_panicking_plugin_is_a_500_with_its_message() {
    expect("/t/trap", 500, "plugin_trapped", "panicking on purpose");
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline() {
    let started = Instant::now();
    // Behind the loops of the test beside it the request may get its turn too
    // late to run at all (503, not started): then it asks again.
    let (status, answer) = (0..50)
        .map(|_| call("/t/loop"))
        .find(|(status, answer)| {
            let unstarted = *status == 503 && answer["error"]["message"].as_str().is_some_and(|m| m.contains("not started"));
            if unstarted {
                std::thread::sleep(Duration::from_millis(100));
            }
            !unstarted
        })
        .expect("a turn within 50 tries");
    assert_eq!((status, answer["error"]["code"].as_str()), (504, Some("deadline_exceeded")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("deadline"), "{answer}");
    // Not a timing target: only proof that the loop was interrupted at all.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_memory_hog_hits_the_cap() {
    expect("/t/hog", 500, "plugin_out_of_memory", "64 MiB");
}

#[test]
fn a_malformed_tensor_traps_with_the_reason() {
    expect("/t/bad-tensor", 500, "plugin_trapped", "need 16 bytes");
}

#[test]
fn a_tensor_of_the_wrong_shape_is_a_model_failure() {
    expect("/t/wrong-shape", 500, "model_failed", "ssd_mobilenet_v2");
}

#[test]
fn good_requests_are_served_while_plugins_loop() {
    let looping: Vec<_> = (0..4).map(|_| std::thread::spawn(|| call("/t/loop").0)).collect();
    for _ in 0..4 {
        assert_eq!(call("/t/good").0, 200);
    }
    // Each loop ran to its deadline (504), or, queued behind the others,
    // got its turn too late to run at all (503, never started).
    for t in looping {
        assert!(matches!(t.join().unwrap(), 504 | 503));
    }
}
