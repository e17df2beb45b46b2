//! Build step: copies the page's third-party player, hls.js, from setup's
//! cache (`$OSPREY_CACHE/web`, default `~/.cache/osprey/web`, where
//! `models/fetch.py` puts the npm package's file checked against its pinned
//! SHA-256) into `OUT_DIR`, where `server::page` compiles it in. Nothing is
//! downloaded here: a build without the cache still succeeds, with a stand-in
//! script that makes the Live tab say to run setup.

use std::path::{Path, PathBuf};

/// The file of `[web] files` in models/models.toml that the page loads as `/hls.js`.
const HLS: &str = "hls.light.min.js";

/// What the page gets instead of hls.js when setup has not fetched it: the
/// Live tab shows this message where it would play the stream.
const STAND_IN: &str = "// hls.js was not in setup's cache when osprey was built.\n\
window.OSPREY_HLS_MISSING = 'hls.js missing: run make setup (models/fetch.py fetches it), then rebuild osprey';\n";

fn cache_dir() -> PathBuf {
    // The same rule as `nn::runtime::cache_dir` and models/fetch.py.
    if let Some(p) = std::env::var_os("OSPREY_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("osprey")
}

/// What to watch for a later `make setup`: the file; without it its folder
/// (setup adding the file changes the folder); without that the missing
/// file, which makes cargo run this script on every build until setup has
/// run. Never a folder further up: cargo scans a watched folder whole, and
/// the cache holds gigabytes that change for other reasons.
fn watched(file: &Path) -> &Path {
    match file.parent() {
        Some(dir) if !file.exists() && dir.is_dir() => dir,
        _ => file,
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OSPREY_CACHE");
    println!("cargo:rerun-if-env-changed=HOME");
    let source = cache_dir().join("web").join(HLS);
    println!("cargo:rerun-if-changed={}", watched(&source).display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("hls.js");
    match std::fs::read(&source) {
        Ok(bytes) => std::fs::write(&out, bytes).expect("write hls.js into OUT_DIR"),
        Err(e) => {
            println!("cargo:warning=the page's Live tab has no player: {}: {e} (run `make setup`, or `python3 models/fetch.py`, then build again)", source.display());
            std::fs::write(&out, STAND_IN).expect("write the stand-in hls.js into OUT_DIR");
        }
    }
}
