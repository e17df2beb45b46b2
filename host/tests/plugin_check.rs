//! `osprey plugin check FILE.wasm`: a shipped plugin fits; a component built
//! for another `osprey:plugin` version, a core module and a file that is no
//! WebAssembly at all are refused with a non-zero exit that says why.

use std::path::{Path, PathBuf};
use std::process::Command;

fn built(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin").join(name);
    path.exists().then_some(path).or_else(|| {
        eprintln!("skipped: {name} not built yet (make plugins)");
        None
    })
}

fn check(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_osprey")).args(["plugin", "check"]).arg(file).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("osprey-plugin-check-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_shipped_plugin_fits_and_its_costs_are_printed() {
    let Some(file) = built("classify.wasm") else { return };
    let (ok, out) = check(&file);
    assert!(ok, "{out}");
    assert!(out.contains("fits osprey:plugin@0.1.1"), "{out}");
    assert!(out.contains("exports   osprey:plugin/settings@0.1.1, osprey:plugin/stage@0.1.1"), "{out}");
    assert!(out.contains("settings  checked by the plugin"), "{out}");
    assert!(out.contains("wasi:nn/graph@"), "{out}");
    assert!(out.contains("compile") && out.contains("linear memories"), "{out}");
}

/// The same component with its stage export renamed to 0.2.0 everywhere it
/// is written: a plugin built against a world this host does not run.
#[test]
fn a_plugin_for_another_world_version_is_refused_naming_the_version_needed() {
    let Some(file) = built("classify.wasm") else { return };
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(rename(&mut bytes, b"osprey:plugin/stage@0.1.1", b"osprey:plugin/stage@0.2.0") > 0, "the export name is in the binary");
    let path = temp("v020.wasm", &bytes);
    let (ok, out) = check(&path);
    assert!(!ok, "must be refused: {out}");
    assert!(out.contains("built for osprey:plugin@0.2.0; this host runs osprey:plugin@0.1.1"), "{out}");

    // A server refuses it at load the same way.
    let engine = osprey::plugin::Engine::new(osprey::plugin::SandboxLimits::default()).unwrap();
    let err = engine.compile("classify-v020", &path).err().expect("refused at load").to_string();
    assert!(err.contains("built for osprey:plugin@0.2.0"), "{err}");
    std::fs::remove_file(path).unwrap();
}

/// dog.jpg and the default config, once `make setup` has made what they need.
fn photo_and_config() -> Option<(PathBuf, PathBuf)> {
    let photo = osprey::nn::runtime::cache_dir().join("images/dog.jpg");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/osprey.toml");
    if !photo.exists() || osprey::config::load(&config).is_err() {
        eprintln!("skipped: the models or test images are not set up yet (make setup)");
        return None;
    }
    Some((photo, config))
}

/// Writes `to` over every `from` in `bytes` (same length); how many there were.
fn rename(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut found = 0;
    while let Some(at) = bytes.windows(from.len()).position(|w| w == from) {
        bytes[at..at + to.len()].copy_from_slice(to);
        found += 1;
    }
    found
}

/// A shipped plugin made into one built for osprey:plugin@0.1.0: every
/// name of the world at 0.1.0, and no `settings` export (renamed out of the
/// world). This host (0.1.1) still runs it, on a photo, and says its
/// settings go unchecked before serving.
#[test]
fn a_plugin_built_for_0_1_0_without_a_settings_check_still_runs() {
    let Some(file) = built("yolo.wasm") else { return };
    let Some((photo, config)) = photo_and_config() else { return };
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(rename(&mut bytes, b"osprey:plugin/settings@", b"osprey:plugin/zettings@") > 0);
    for name in ["stage", "types", "imaging", "host", "zettings"] {
        let from = format!("osprey:plugin/{name}@0.1.1");
        rename(&mut bytes, from.as_bytes(), from.replace("0.1.1", "0.1.0").as_bytes());
    }
    let path = temp("v010.wasm", &bytes);
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    assert!(out.contains("osprey:plugin/stage@0.1.0") && out.contains("imports   ") && out.contains("osprey:plugin/types@0.1.0"), "{out}");
    assert!(out.contains("settings  not checked before serving"), "{out}");
    // A misspelt setting is not caught before the run; the run itself refuses it.
    let run = |settings: &str| {
        Command::new(env!("CARGO_BIN_EXE_osprey"))
            .args(["plugin", "run"])
            .arg(&path)
            .arg("--image")
            .arg(&photo)
            .args(["--before", "image-prep", "--settings", settings])
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = run("model = \"yolov5s\"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"dog\""), "{stdout}");
    let out = run("cof = 0.5");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("unknown field `cof`") && !stderr.contains("refuses its settings"), "{stderr}");
    std::fs::remove_file(path).unwrap();
}

/// `osprey check` asks each stage's plugin about its settings: a misspelt
/// one fails with the config's file, line and column, before anything serves.
#[test]
fn osprey_check_finds_a_misspelt_setting_where_the_config_writes_it() {
    let Some(_) = built("yolo.wasm") else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let good = std::fs::read_to_string(dir.join("osprey.toml")).unwrap();
    let bad = good.replace("max_det = 300", "max_dets = 300");
    assert_ne!(good, bad, "the default config's YOLO stage has max_det");
    // Beside the default config, so its relative paths hold; named per process.
    let path = dir.join(format!(".check-misspelt-{}.toml", std::process::id()));
    std::fs::write(&path, &bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_osprey")).args(["check", "--config"]).arg(&path).env("RUST_BACKTRACE", "0").output().unwrap();
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let line = bad.lines().position(|l| l.contains("max_dets")).unwrap() + 1;
    let at = format!("{}:{line}:", path.display());
    assert!(stderr.contains(&at), "{at} in: {stderr}");
    assert!(stderr.contains("route POST /v1/detect: stage 2: plugin 'yolo' refuses its settings: settings: `max_dets`: unknown field `max_dets`"), "{stderr}");
    assert!(!stderr.contains("at line 1 column"), "no position in the JSON text the author never wrote: {stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_osprey")).args(["check", "--config"]).arg(dir.join("osprey.toml")).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("every stage's settings accepted"), "{out:?}");
}

#[test]
fn a_core_module_or_garbage_is_refused_with_what_to_do() {
    let core = temp("core.wasm", b"\0asm\x01\0\0\0");
    let (ok, out) = check(&core);
    assert!(!ok && out.contains("a core WebAssembly module, not a component") && out.contains("wasm32-wasip2"), "{out}");
    let text = temp("text.wasm", b"[package]\nname = \"zone\"\n");
    let (ok, out) = check(&text);
    assert!(!ok && out.contains("not a WebAssembly component"), "{out}");
    let _ = std::fs::remove_file(core);
    let _ = std::fs::remove_file(text);
}

/// `osprey plugin run`: the shipped YOLO stage after the config's image-prep,
/// on a photo, in one process: the JSON answer and each stage's time.
#[test]
fn plugin_run_answers_a_photo_without_a_server() {
    let Some(file) = built("yolo.wasm") else { return };
    let Some((photo, config)) = photo_and_config() else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args(["plugin", "run"])
        .arg(&file)
        .arg("--image")
        .arg(&photo)
        .args(["--before", "image-prep", "--settings", "model = \"yolov5s\"\nconf = 0.25"])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let labels: Vec<&str> = answer["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"dog"), "{answer}");
    assert_eq!(answer["image"]["width"], 768, "boxes in the photo's pixels: {answer}");
    assert!(stderr.contains("image-prep") && stderr.contains("under-test") && stderr.contains("total"), "times per stage: {stderr}");

    // A stage name the config lacks is a clear error, not a panic.
    let bad = Command::new(env!("CARGO_BIN_EXE_osprey")).args(["plugin", "run"]).arg(&file).arg("--image").arg(&photo).args(["--before", "imageprep"]).arg("--config").arg(&config).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("has no plugin 'imageprep'"), "{}", String::from_utf8_lossy(&bad.stderr));
}
