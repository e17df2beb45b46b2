//! Per-plugin policy (`[plugins.NAME] models, memory_mib, deadline_ms`,
//! README "Configuration"): a plugin narrowed below the server's limits is
//! stopped at its own, with an error that names them, while the same
//! component under another name keeps the server's, and plugins within
//! their policy serve as before. (The model list is refused at load in
//! `host/tests/config_ui/plugin_policy.toml`, and at `load-by-name` in
//! `plugin::wasi_nn`'s unit tests.)

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{client, read};
use osprey_tests::TestServer;
use serde_json::Value;

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| osprey_tests::start(&osprey_tests::repo().join("tests/e2e/policy.toml")))
}

fn call(path: &str) -> (u16, Value) {
    let body = osprey_tests::image("chelsea.png");
    read(client().post(server().url(path)).header("content-type", "image/png").body(body).send().unwrap())
}

fn error(path: &str) -> (u16, String, String) {
    let (status, answer) = call(path);
    let field = |k: &str| answer["error"][k].as_str().unwrap_or_else(|| panic!("{path}: no error.{k} in {answer}")).to_string();
    (status, field("code"), field("message"))
}

#[test]
fn a_plugin_with_memory_mib_is_stopped_at_its_own_cap_and_the_same_component_at_the_servers() {
    let (status, code, message) = error("/t/hog-narrow");
    assert_eq!((status, code.as_str()), (500, "plugin_out_of_memory"), "{message}");
    assert!(message.contains("'misbehave-narrow' exceeded its memory limit of 24 MiB"), "{message}");
    let (status, code, message) = error("/t/hog");
    assert_eq!((status, code.as_str()), (500, "plugin_out_of_memory"), "{message}");
    assert!(message.contains("'misbehave' exceeded its memory limit of 64 MiB"), "{message}");
}

#[test]
fn a_plugin_with_deadline_ms_is_stopped_at_it_well_before_the_routes() {
    let started = Instant::now();
    let (status, code, message) = error("/t/loop-narrow");
    let took = started.elapsed();
    assert_eq!((status, code.as_str()), (504, "deadline_exceeded"), "{message}");
    assert!(message.contains("its own deadline of 150 ms ([plugins.misbehave-narrow] deadline_ms)"), "{message}");
    // The route allows 10 s; only the plugin's 150 ms can have stopped it this soon.
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
}

#[test]
fn plugins_within_their_policy_serve_as_before() {
    let (status, answer) = call("/t/good");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["detections"][0]["label"], "cat", "{answer}");
}
