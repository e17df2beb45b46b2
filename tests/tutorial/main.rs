//! "Your first plugin" (README, Writing a plugin), command by command, as an
//! author types them: `osprey plugin new`, the unit tests, the build, `osprey
//! plugin check`, `osprey plugin run` on a photo, the route appended to the
//! config of a running `osprey serve`, which loads it, and the answer over
//! HTTP. Real processes throughout: the release binary, cargo, componentize-py.
//! If the tutorial's commands stop working, this fails; the time from `plugin
//! new` to the first answer is printed (README).
//!
//! The Python half needs componentize-py, which `make setup` installs in
//! `$OSPREY_CACHE/venv-componentize`; without it those tests say so and skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use osprey_tests::process::{binary, Osprey, ANY_PORT};
use serde_json::Value;

/// A folder of the test's own, holding the config and the projects.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(osprey_tests::unique_name(&format!("osprey-tutorial-{name}")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dog.jpg"), osprey_tests::image("dog.jpg")).unwrap();
    std::fs::write(dir.join("osprey.toml"), config()).unwrap();
    dir
}

/// What an author's config holds before the tutorial: the detector the new
/// stage goes after (the default config's `/v1/detect`, yolov5s only).
fn config() -> String {
    let repo = osprey_tests::repo();
    let (models, plugins) = (repo.join("models"), repo.join("target/wasm32-wasip2/plugin"));
    format!(
        r#"
[models.yolov5s]
file = "{models}/yolov5s/model.onnx"
labels = "{models}/yolov5s/labels.txt"
input = {{ layout = "nhwc", width = 640, height = 640, type = "fp32" }}
instances = 1

[plugins.image-prep]
file = "{plugins}/image_prep.wasm"

[plugins.yolo]
file = "{plugins}/yolo.wasm"

[[routes]]
path = "/v1/detect"
method = "POST"
stages = [
  {{ plugin = "image-prep", settings = {{ width = 640, height = 640, fit = "letterbox", pad = 114, layout = "nhwc", dtype = "fp32", mean = [0.0, 0.0, 0.0], std = [255.0, 255.0, 255.0] }} }},
  {{ plugin = "yolo", settings = {{ model = "yolov5s", conf = 0.25, iou = 0.45, max_det = 300 }} }},
]
"#,
        models = models.display(),
        plugins = plugins.display()
    )
}

/// Runs `program args` in `dir` (with `path` first on PATH), as a shell
/// would; fails the test with its output unless it succeeds. Returns stdout.
fn run(dir: &Path, path: Option<&Path>, program: &str, args: &[&str]) -> String {
    let program = if program == "osprey" { binary().display().to_string() } else { program.to_string() };
    let mut command = Command::new(&program);
    command.args(args).current_dir(dir).env("NO_COLOR", "1");
    // The tutorial's paths are cargo's defaults: a target folder set for the
    // test run must not move the project's.
    command.env_remove("CARGO_TARGET_DIR");
    if let Some(first) = path {
        command.env("PATH", format!("{}:{}", first.display(), std::env::var("PATH").unwrap_or_default()));
    }
    let out = command.output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{program} {}` in {} failed ({}):\n{stdout}\n{stderr}", args.join(" "), dir.display(), out.status);
    stdout.into_owned()
}

/// POSTs dog.jpg to `path` until the server has loaded the route (404 until
/// then), returning the first answer that is not 404.
fn first_answer(server: &Osprey, path: &str, limit: Duration) -> (u16, Value) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let start = Instant::now();
    loop {
        let resp = client.post(server.url(path)).header("content-type", "image/jpeg").body(osprey_tests::image("dog.jpg")).send().unwrap();
        let status = resp.status().as_u16();
        if status != 404 {
            let text = resp.text().unwrap();
            return (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")));
        }
        assert!(start.elapsed() < limit, "{path} still 404 after {limit:?}: the server did not load the appended route");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn labels(answer: &Value) -> Vec<&str> {
    answer["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap()).collect()
}

/// The zone stage on dog.jpg with the left half as its zone: the dog stays,
/// the truck (right) goes, and its field counts what it kept.
fn assert_zone_answer(answer: &Value, field: &str) {
    let kept = labels(answer);
    assert!(kept.contains(&"dog"), "{answer}");
    assert!(!kept.contains(&"truck"), "the truck lies right of the zone: {answer}");
    assert_eq!(answer[field]["kept"], kept.len(), "{answer}");
    assert_eq!(answer[field]["labels"]["dog"], 1, "{answer}");
}

/// `plugin run` prints the answer after the stage timings: from the first `{`.
fn printed_json(stdout: &str) -> Value {
    let at = stdout.find("\n{").map_or(0, |i| i + 1);
    serde_json::from_str(&stdout[at..]).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The steps' times, for the README: seconds since `plugin new`.
struct Clock(Instant, Vec<(&'static str, f64)>);

impl Clock {
    fn start() -> Clock {
        Clock(Instant::now(), Vec::new())
    }
    fn lap(&mut self, what: &'static str) {
        self.1.push((what, self.0.elapsed().as_secs_f64()));
    }
    fn report(&self, lang: &str) {
        let laps: Vec<String> = self.1.iter().map(|(what, s)| format!("{what} {s:.1} s")).collect();
        eprintln!("tutorial ({lang}), seconds since `osprey plugin new`: {}", laps.join(", "));
    }
}

#[test]
fn your_first_plugin_in_rust_from_plugin_new_to_an_answer() {
    let work = workdir("rust");
    let server = Osprey::start(&work.join("osprey.toml"), ANY_PORT);
    let project = work.join("zone");
    let mut clock = Clock::start();
    run(&work, None, "osprey", &["plugin", "new", "zone", "--kind", "post"]);
    clock.lap("scaffolded");
    let tests = run(&project, None, "cargo", &["test", "--release"]);
    assert!(tests.contains("test result: ok"), "{tests}");
    clock.lap("unit tests passed");
    run(&project, None, "cargo", &["build", "--release", "--target", "wasm32-wasip2"]);
    clock.lap("built");
    let wasm = "target/wasm32-wasip2/release/zone.wasm";
    let checked = run(&project, None, "osprey", &["plugin", "check", wasm]);
    assert!(checked.contains("fits osprey:plugin@") && checked.contains("settings  checked by the plugin"), "{checked}");
    let ran = run(&project, None, "osprey", &["plugin", "run", wasm, "--image", "../dog.jpg", "--before", "image-prep,yolo", "--settings", "zone = [0, 0, 384, 576]", "--config", "../osprey.toml"]);
    assert_zone_answer(&printed_json(&ran), "zone");
    clock.lap("ran on a photo");
    append(&project.join("route.toml"), &work.join("osprey.toml"));
    let (status, answer) = first_answer(&server, "/v1/zone", Duration::from_secs(60));
    clock.lap("first answer from the server");
    assert_eq!(status, 200, "{answer}");
    assert_zone_answer(&answer, "zone");
    clock.report("Rust");
    drop(server);
    done(&work);
}

/// Removes a passed test's folder (its cargo target alone is ~100 MB); a
/// failed test leaves it for a look.
fn done(work: &Path) {
    std::fs::remove_dir_all(work).unwrap_or_else(|e| panic!("{}: {e}", work.display()));
}

/// `cat route.toml >> ../osprey.toml`.
fn append(snippet: &Path, config: &Path) {
    use std::io::Write;
    let text = std::fs::read_to_string(snippet).unwrap();
    std::fs::OpenOptions::new().append(true).open(config).unwrap().write_all(format!("\n{text}").as_bytes()).unwrap();
}

/// componentize-py's folder, or `None` (the test says it skips).
fn componentize_py() -> Option<PathBuf> {
    let bin = osprey::nn::runtime::cache_dir().join("venv-componentize/bin");
    if bin.join("componentize-py").is_file() {
        return Some(bin);
    }
    eprintln!("skipped: {} has no componentize-py (`make setup` installs it)", bin.display());
    None
}

/// The Python project's three commands (its README): bindings, unit tests, component.
fn build_python(project: &Path, venv: &Path, module: &str, clock: &mut Clock) {
    let world = ["-d", "wit", "-w", "osprey:plugin/plugin"];
    run(project, Some(venv), "componentize-py", &[&world[..], &["bindings", "."]].concat());
    run(project, Some(venv), "python3", &["-m", "unittest", "test_app"]);
    clock.lap("unit tests passed");
    let out = format!("{module}.wasm");
    run(project, Some(venv), "componentize-py", &[&world[..], &["componentize", "app", "-o", &out]].concat());
    clock.lap("built");
}

#[test]
fn your_first_plugin_in_python_from_plugin_new_to_an_answer() {
    let Some(venv) = componentize_py() else { return };
    let work = workdir("python");
    let server = Osprey::start(&work.join("osprey.toml"), ANY_PORT);
    let project = work.join("zone-py");
    let mut clock = Clock::start();
    run(&work, None, "osprey", &["plugin", "new", "zone-py", "--lang", "python", "--kind", "post"]);
    clock.lap("scaffolded");
    build_python(&project, &venv, "zone_py", &mut clock);
    let checked = run(&project, None, "osprey", &["plugin", "check", "zone_py.wasm"]);
    assert!(checked.contains("fits osprey:plugin@") && checked.contains("settings  checked by the plugin"), "{checked}");
    // The Python stage's own `Settings.check`, asked by the host before the run.
    let misspelt = Command::new(binary())
        .args(["plugin", "run", "zone_py.wasm", "--image", "../dog.jpg", "--before", "image-prep,yolo", "--settings", "zones = [0, 0, 384, 576]", "--config", "../osprey.toml"])
        .current_dir(&project)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&misspelt.stderr);
    assert!(!misspelt.status.success() && said.contains("--settings: plugin 'under-test' refuses its settings: settings: unknown field `zones`"), "{said}");
    let ran = run(&project, None, "osprey", &["plugin", "run", "zone_py.wasm", "--image", "../dog.jpg", "--before", "image-prep,yolo", "--settings", "zone = [0, 0, 384, 576]", "--config", "../osprey.toml"]);
    assert_zone_answer(&printed_json(&ran), "zone-py");
    clock.lap("ran on a photo");
    append(&project.join("route.toml"), &work.join("osprey.toml"));
    // `plugin run` left the compiled copy in the cache the server reads: the
    // reload takes milliseconds, not the 10-25 s of a first compile.
    let (status, answer) = first_answer(&server, "/v1/zone-py", Duration::from_secs(120));
    clock.lap("first answer from the server");
    assert_eq!(status, 200, "{answer}");
    assert_zone_answer(&answer, "zone-py");
    clock.report("Python");
    drop(server);
    done(&work);
}

/// The other two kinds of each language: made, unit-tested, built and run
/// on dog.jpg in the chain their README names. (The Rust ones share one
/// target folder: the SDK's crates compile once.)
#[test]
fn the_pre_and_report_templates_build_and_run_on_a_photo() {
    let work = workdir("kinds");
    let target = osprey_tests::repo().join("target/tutorial-kinds");
    for (kind, name) in [("pre", "prep"), ("report", "tally")] {
        run(&work, None, "osprey", &["plugin", "new", name, "--kind", kind]);
        let project = work.join(name);
        let cargo = |args: &[&str]| {
            let out = Command::new("cargo").args(args).current_dir(&project).env("CARGO_TARGET_DIR", &target).output().unwrap();
            assert!(out.status.success(), "cargo {args:?} for {kind}: {}", String::from_utf8_lossy(&out.stderr));
        };
        cargo(&["test", "--release"]);
        cargo(&["build", "--release", "--target", "wasm32-wasip2"]);
        let wasm = target.join(format!("wasm32-wasip2/release/{name}.wasm"));
        check_kind_answer(&project, kind, name, &wasm.display().to_string());
    }
    let Some(venv) = componentize_py() else { return done(&work) };
    for (kind, name) in [("pre", "prep-py"), ("report", "tally-py")] {
        run(&work, None, "osprey", &["plugin", "new", name, "--lang", "python", "--kind", kind]);
        let project = work.join(name);
        let module = name.replace('-', "_");
        build_python(&project, &venv, &module, &mut Clock::start());
        check_kind_answer(&project, kind, name, &format!("{module}.wasm"));
    }
    done(&work);
}

/// `plugin run` with the arguments the project's README gives for its kind.
fn check_kind_answer(project: &Path, kind: &str, name: &str, wasm: &str) {
    let chain: &[&str] = if kind == "pre" { &["--after", "yolo"] } else { &["--before", "image-prep,yolo"] };
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(readme.contains(&format!("--image dog.jpg {}", chain.join(" "))), "{kind}: the README's run command: {readme}");
    let args = [&["plugin", "run", wasm, "--image", "../dog.jpg", "--config", "../osprey.toml"][..], chain].concat();
    let answer = printed_json(&run(project, None, "osprey", &args));
    assert!(labels(&answer).contains(&"dog"), "{kind}: {answer}");
    if kind == "report" {
        assert_eq!(answer[name]["total"], labels(&answer).len(), "{answer}");
        assert_eq!((answer[name]["width"].as_u64(), answer[name]["height"].as_u64()), (Some(768), Some(576)), "{answer}");
    } else {
        // Boxes are mapped back through the placement the stage recorded.
        let dog = &answer["detections"].as_array().unwrap().iter().find(|d| d["label"] == "dog").unwrap()["box"];
        assert!((dog[0].as_f64().unwrap() - 131.0).abs() < 5.0, "the dog's box where image-prep puts it: {answer}");
    }
}
