//! `osprey client`: the real binary against the test server. Tables and JSON
//! on stdout, readable errors on stderr, and exit codes scripts can trust
//! (0 answered, 1 server or connection, 2 usage or file).

use std::path::PathBuf;
use std::process::Command;

/// Runs `osprey client ARGS --url <test server>`: exit code, stdout, stderr.
fn client(args: &[&str]) -> (i32, String, String) {
    client_at(&osprey_tests::default_server().url(""), args)
}

fn client_at(url: &str, args: &[&str]) -> (i32, String, String) {
    let binary = osprey_tests::repo().join("target/release/osprey");
    let out = Command::new(&binary)
        .arg("client")
        .args(args)
        .args(["--url", url])
        .env_remove("OSPREY_URL")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (build it: cargo build --release -p osprey)", binary.display()));
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().expect("an exit code"), text(out.stdout), text(out.stderr))
}

/// A test image written to a file, as a user would have it.
fn photo(name: &str) -> String {
    let dir = std::env::temp_dir().join("osprey-client-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = osprey_tests::fixture(&dir.join(name), |tmp| std::fs::write(tmp, osprey_tests::image(name)).unwrap());
    path.to_string_lossy().into_owned()
}

#[test]
fn detect_prints_a_table_with_the_dog() {
    let dog = photo("dog.jpg");
    let (code, stdout, stderr) = client(&["detect", &dog]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&format!("{dog}: ")) && stdout.contains("objects (yolov5s"), "{stdout}");
    assert!(stdout.contains("label") && stdout.contains("score") && stdout.contains("box (x1, y1, x2, y2)"), "{stdout}");
    let row = stdout.lines().find(|l| l.trim_start().starts_with("dog ")).unwrap_or_else(|| panic!("no dog row: {stdout}"));
    // label, score, four coordinates
    let fields: Vec<&str> = row.split(|c: char| c.is_whitespace() || c == ',').filter(|f| !f.is_empty()).collect();
    assert_eq!(fields.len(), 6, "{row}");
    assert!(fields[1].parse::<f64>().unwrap() > 0.5, "{row}");
}

#[test]
fn detect_json_is_the_servers_answer() {
    let dog = photo("dog.jpg");
    let (code, stdout, stderr) = client(&["detect", "--fast", "--json", &dog]);
    assert_eq!(code, 0, "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(answer["file"], dog.as_str());
    assert_eq!(answer["model"], "ssd_mobilenet_v2");
    assert!(answer["detections"].as_array().unwrap().iter().any(|d| d["label"] == "dog"), "{answer}");
}

#[test]
fn classify_prints_the_top_classes() {
    let cat = photo("chelsea.png");
    let (code, stdout, stderr) = client(&["classify", "--top", "3", &cat]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2 + 3, "header, column names, three classes: {stdout}");
    assert!(lines[0].contains("efficientnet_lite3"), "{stdout}");
    assert!(lines[2..].iter().any(|l| l.contains("cat")), "{stdout}");
}

#[test]
fn a_missing_file_exits_2_and_names_it() {
    let (code, stdout, stderr) = client(&["detect", "/nonexistent/photo.jpg"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("cannot read /nonexistent/photo.jpg") && stderr.contains("No such file"), "{stderr}");
}

#[test]
fn a_server_refusal_exits_1_with_the_servers_message() {
    let dir = PathBuf::from(photo("dog.jpg")).parent().unwrap().to_path_buf();
    let text = dir.join(format!("{}.txt", osprey_tests::unique_name("notes")));
    std::fs::write(&text, "not an image at all\n".repeat(10)).unwrap();
    let (code, _, stderr) = client(&["detect", text.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&*text.to_string_lossy()) && stderr.contains("(415 unsupported_media_type)"), "{stderr}");
    // The good image beside it is still answered; the exit code keeps the failure.
    let (code, stdout, _) = client(&["classify", &photo("chelsea.png"), text.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.contains("chelsea.png"), "{stdout}");
    let _ = std::fs::remove_file(&text);
}

#[test]
fn an_unreachable_server_is_named() {
    let (code, _, stderr) = client_at("http://127.0.0.1:9", &["classify", &photo("chelsea.png")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot reach the server at http://127.0.0.1:9"), "{stderr}");
}

#[test]
fn video_prints_a_summary_per_second() {
    let _jobs = super::video::jobs_lock();
    let video = super::video::horses_mp4("short.mp4", 2, 5, &[]);
    let (code, stdout, stderr) = client(&["video", "--fast", video.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": 10 frames at 5.0 fps") && stdout.contains("by /v1/detect/fast"), "{stdout}");
    let rows: Vec<&str> = stdout.lines().skip_while(|l| !l.contains("second  frames")).skip(1).collect();
    assert_eq!(rows.len(), 2, "one row per second: {stdout}");
    for (second, row) in rows.iter().enumerate() {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[..2], [second.to_string().as_str(), "5"], "{row}");
        assert_eq!(fields[2], "horse", "horses are what the video shows most: {row}");
    }
}
