//! The default config's Python plugin (`plugins/zones`, componentize-py) on
//! its route: YOLO's detections on dog.jpg counted per zone, over HTTP.

use super::{client, post};
use serde_json::Value;

fn labels(answer: &Value) -> Vec<&str> {
    answer["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap()).collect()
}

#[test]
fn the_python_zones_plugin_counts_yolos_detections_per_half_of_the_photo() {
    let (status, answer) = post("/v1/detect/zones", "image/jpeg", osprey_tests::image("dog.jpg"));
    assert_eq!(status, 200, "{answer}");
    // The default zones are the photo's halves: every detection lies in one.
    let (status, plain) = post("/v1/detect", "image/jpeg", osprey_tests::image("dog.jpg"));
    assert_eq!(status, 200, "{plain}");
    assert_eq!(labels(&answer), labels(&plain), "{answer}");
    let zones = &answer["zones"];
    let total = zones["left"]["total"].as_u64().unwrap() + zones["right"]["total"].as_u64().unwrap();
    assert_eq!(total as usize, labels(&plain).len(), "{zones}");
    // dog.jpg: the dog and the bicycle stand left of the middle, the truck right.
    assert_eq!(zones["left"]["labels"]["dog"], 1, "{zones}");
    assert_eq!(zones["left"]["labels"]["bicycle"], 1, "{zones}");
    assert_eq!(zones["right"]["labels"]["truck"], 1, "{zones}");
    // Boxes are the detector's, in the photo's pixels.
    for (z, p) in answer["detections"].as_array().unwrap().iter().zip(plain["detections"].as_array().unwrap()) {
        assert_eq!(z["box"], p["box"]);
    }

    // The chain named in the answer's headers includes the Python stage.
    let server = osprey_tests::default_server();
    let resp = client().post(server.url("/v1/detect/zones?conf=0.5")).header("content-type", "image/jpeg").body(osprey_tests::image("dog.jpg")).send().unwrap();
    let chain = resp.headers().get("x-osprey-chain").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert!(chain.contains("zones@"), "{chain}");
}

/// The plugin's own unit tests (`plugins/zones/test_app.py`), natively,
/// against bindings componentize-py makes from this host's wit/ in a
/// folder of the test's own (the source folder stays clean).
#[test]
fn the_zones_plugins_python_unit_tests_pass() {
    let bin = osprey::nn::runtime::cache_dir().join("venv-componentize/bin");
    if !bin.join("componentize-py").is_file() {
        eprintln!("skipped: componentize-py is not installed (make setup puts it in {})", bin.display());
        return;
    }
    let repo = osprey_tests::repo();
    let dir = std::env::temp_dir().join(osprey_tests::unique_name("osprey-zones-unit"));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["app.py", "test_app.py"] {
        std::fs::copy(repo.join("plugins/zones").join(file), dir.join(file)).unwrap();
    }
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(bin.join(program)).args(args).current_dir(&dir).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{program} {args:?}: {said}");
        said
    };
    let wit = repo.join("wit");
    run("componentize-py", &["-d", wit.to_str().unwrap(), "-w", "osprey:plugin/plugin", "bindings", "."]);
    let said = run("python3", &["-m", "unittest", "-v", "test_app"]);
    assert!(said.contains("OK") && said.contains("test_bad_settings_are_refused_by_run_and_by_the_check_alike"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}
