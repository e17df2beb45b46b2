//! Editing a stage's settings and reloading never serves the old answer
//! from the cache: the settings are part of the cache key. (Once the key held
//! only plugin builds and model versions, and a cached answer of the old
//! settings came back as a hit until its TTL ran out.)

use std::time::Duration;

use super::{admin, until, Site, TOKEN};

fn detect(server: &osprey_tests::TestServer) -> (String, usize) {
    let resp = reqwest::blocking::Client::new()
        .post(server.url("/v1/detect/fast"))
        .header("content-type", "image/png")
        .body(osprey_tests::image("chelsea.png"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cache = resp.headers()["x-osprey-cache"].to_str().unwrap().to_string();
    let answer: serde_json::Value = resp.json().unwrap();
    (cache, answer["detections"].as_array().unwrap().len())
}

#[test]
fn a_reload_that_changes_settings_misses_the_cache() {
    let site = Site::new("settings-cache");
    let server = site.serve();
    let (first, before) = detect(&server);
    assert_eq!(first, "miss");
    assert_eq!(detect(&server), ("hit".to_string(), before), "the same photo again is a hit");
    assert!(before > 0, "the test photo has detections at conf 0.4");

    // Raise the threshold past every score: the new settings answer no detection.
    let path = site.path("osprey.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("conf = 0.4", "conf = 0.999");
    std::fs::write(&path, text).unwrap();
    until("generation 2", Duration::from_secs(30), || admin(&server, reqwest::Method::GET, "/admin/status", Some(TOKEN)).1["generation"] == 2);

    let (cache, after) = detect(&server);
    assert_eq!(cache, "miss", "new settings must not be answered from the old settings' cache");
    assert_eq!(after, 0, "conf 0.999 keeps no detection");
}

/// An author trying a plugin asks for a fresh answer with `Cache-Control:
/// no-cache` and the admin token; without the token the header is ignored,
/// so no client can make the server skip its cache.
#[test]
fn no_cache_with_the_admin_token_skips_the_cache_and_without_it_does_not() {
    let site = Site::new("no-cache");
    let server = site.serve();
    let ask = |headers: &[(&str, &str)]| {
        let mut req = reqwest::blocking::Client::new().post(server.url("/v1/detect/fast")).header("content-type", "image/png").body(osprey_tests::image("chelsea.png"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.headers()["x-osprey-cache"].to_str().unwrap().to_string()
    };
    assert_eq!(ask(&[]), "miss");
    assert_eq!(ask(&[]), "hit");
    assert_eq!(ask(&[("cache-control", "no-cache")]), "hit", "without the admin token the header is ignored");
    assert_eq!(ask(&[("cache-control", "no-cache"), ("authorization", "Bearer wrong-token-0123456789abcdef")]), "hit");
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(ask(&[("cache-control", "no-cache"), ("authorization", &bearer)]), "miss", "with it the chain runs");
}
