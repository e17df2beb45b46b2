//! Watermarked streams: each viewer's HLS carries their ID, a recorded clip
//! gives it back, and the audit log keeps who watched through a SIGKILL.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;

#[test]
fn viewers_are_traced_from_their_clips_and_audited_through_sigkill() {
    let _one = one_at_a_time();
    let (config, audit_file) = config("watermark", (19370, 19374));
    let mut server = start(&config);
    let stream = create(&server, json!({"source": "push", "width": 640, "height": 360, "fps": 10, "watermark": true}));
    let id = stream["id"].as_str().unwrap().to_string();
    // Without a viewer token a watermarked stream is not served.
    let bare = client().get(server.url(&format!("/v1/streams/{id}/index.m3u8"))).send().unwrap();
    assert_eq!(bare.status().as_u16(), 403);
    let viewers: Vec<(u32, String)> = [165u32, 42]
        .iter()
        .map(|v| {
            let (status, body) = post(&server, &format!("/v1/streams/{id}/viewers"), json!({"id": v}));
            assert_eq!(status, 201, "{body}");
            (*v, body["hls"].as_str().unwrap().to_string())
        })
        .collect();
    let (status, _) = post(&server, &format!("/v1/streams/{id}/viewers"), json!({"id": 256}));
    assert_eq!(status, 400, "IDs have 8 bits by default");
    let mut source = publish(stream["publish"].as_str().unwrap(), 0, 20);
    // Each viewer records 10 one-second segments, as a leaker would.
    let clips: Vec<(u32, Vec<u8>)> = std::thread::scope(|s| {
        let running: Vec<_> = viewers
            .iter()
            .map(|(v, hls)| {
                let server = &server;
                s.spawn(move || {
                    let segments = record(server, hls, 10, Duration::from_secs(90));
                    assert!(segments.len() >= 8, "viewer {v} recorded {} segments in 90 s: too few to trace", segments.len());
                    (*v, segments.into_iter().flat_map(|(_, _, b)| b).collect::<Vec<u8>>())
                })
            })
            .collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = source.wait();
    for (viewer, clip) in &clips {
        let resp = client().post(server.url("/v1/streams/trace")).bearer_auth(TOKEN).header("content-type", "video/mp2t").body(clip.clone()).send().unwrap();
        let status = resp.status().as_u16();
        let traced: Value = resp.json().unwrap();
        println!("stream figures: viewer {viewer} traced: {traced}");
        assert_eq!(status, 200, "{traced}");
        assert_eq!(traced["viewer"], json!(viewer), "{traced}");
        assert_eq!(traced["found"], json!(true));
    }

    // Who watched: one row per viewer per minute, acknowledged once committed.
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(10), "audit rows for both viewers", || {
        rows = get_json(&server, "/admin/audit")["rows"].as_array().cloned().unwrap_or_default();
        [165, 42].iter().all(|v| rows.iter().any(|r| r["viewer"] == json!(v) && r["stream"] == json!(id) && r["ip"] == json!("127.0.0.1")))
    });
    let one = get_json(&server, "/admin/audit?viewer=42")["rows"].as_array().cloned().unwrap();
    assert!(!one.is_empty() && one.iter().all(|r| r["viewer"] == json!(42)));

    // SIGKILL: every acknowledged row is in the file.
    server.kill();
    let conn = rusqlite::Connection::open(&audit_file).unwrap();
    for r in &rows {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM audit WHERE viewer = ?1 AND ip = ?2 AND minute = ?3 AND stream = ?4",
                rusqlite::params![r["viewer"].as_u64().unwrap(), r["ip"].as_str().unwrap(), r["minute"].as_i64().unwrap(), r["stream"].as_str().unwrap()],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged row lost: {r}");
    }
}
