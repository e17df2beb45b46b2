//! The web page at `/` in a real browser: starts Osprey on the default config
//! and the real models, then runs the Playwright scripts of this folder
//! (`*.test.mjs`, node's own test runner) against it in Debian's chromium.
//! What each script checks is in its header; `lib.mjs` holds what they share.
//!
//! Needs `make browser-deps` (playwright-core, pinned by `package-lock.json`;
//! no browser download) and the Debian packages `chromium` and `ffmpeg`
//! (`make test-deps`). `OSPREY_SCREENSHOTS=$PWD/tests/browser/screenshots`
//! refreshes the README's screenshots. The server gets an admin token of
//! this run's own (`OSPREY_ADMIN_TOKEN`, handed to the scripts too): the
//! Live tab creates and stops streams with it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The scripts, run one after the other: each starts its own chromium, and
/// two at once would only fight over this machine's cores.
fn scripts(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/browser")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".test.mjs")))
        .collect();
    found.sort();
    found
}

fn require(ok: bool, problem: &str) {
    assert!(ok, "{problem}");
}

#[test]
fn the_page_works_in_chromium() {
    let dir = osprey_tests::repo().join("tests/browser");
    require(
        dir.join("node_modules/playwright-core/package.json").exists(),
        "tests/browser/node_modules is missing: run `make browser-deps` (npm ci of the pinned playwright-core)",
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    require(Path::new(&chromium).exists(), &format!("{chromium} is missing: run `make test-deps` (apt-get install chromium)"));
    let scripts = scripts(&dir);
    require(!scripts.is_empty(), "no tests/browser/*.test.mjs found");

    // Read by the config when the server below loads it; set while this
    // test is the only thread that reads the environment.
    let token = format!("browser-tests-{}", osprey_tests::unique_name("admin"));
    std::env::set_var("OSPREY_ADMIN_TOKEN", &token);
    let server = osprey_tests::default_server();
    let url = server.url("");
    eprintln!("browser tests against {url}: {} scripts", scripts.len());
    let status = Command::new("node")
        .current_dir(&dir)
        .args(["--test", "--test-concurrency=1", "--test-timeout=300000", "--test-reporter=spec"])
        .args(&scripts)
        .env("OSPREY_URL", &url)
        .env("CHROMIUM", &chromium)
        .env("OSPREY_ADMIN_TOKEN", &token)
        .status()
        .unwrap_or_else(|e| panic!("cannot run node: {e} (apt-get install nodejs)"));
    assert!(status.success(), "the browser tests failed ({status}); node's report is above");
}
