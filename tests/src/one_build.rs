//! `make test` right after `make serve` builds only the tests (issue 16).
//!
//! `make host` builds the server with `cargo build --release --workspace
//! --bins`; the test build is `cargo test --release --workspace`, which adds
//! every member's dev-dependencies. Where a dev-dependency turns on a feature
//! of a crate the server also uses, that crate and every crate above it
//! (wasmtime included) are compiled a second time, with other features. So
//! both builds must give every crate they share the same features.

use std::collections::BTreeMap;
use std::process::Command;

/// `crate version` -> the feature sets it is built with (one per build
/// context: the target, and the host for build scripts and proc macros).
fn features(edges: &str) -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(crate::repo())
        .args(["tree", "--locked", "--workspace", "--prefix", "none", "--format", "{p}|{f}", "-e", edges])
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "cargo tree -e {edges}: {}", String::from_utf8_lossy(&out.stderr));
    let mut crates: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.is_empty()) {
        let (package, features) = line.trim_end_matches(" (*)").split_once('|').expect("{p}|{f}");
        let sets = crates.entry(package.to_string()).or_default();
        if !sets.iter().any(|s| s == features) {
            sets.push(features.to_string());
            sets.sort();
        }
    }
    crates
}

#[test]
fn make_test_after_make_serve_compiled_wasmtime_again() {
    let makefile = std::fs::read_to_string(crate::repo().join("Makefile")).unwrap();
    assert!(makefile.contains("build --release --workspace --bins"), "`make host` no longer builds what this test checks");
    let (host, tests) = (features("no-dev"), features("normal,build,dev"));
    let differ: Vec<_> = host.iter().filter(|(package, sets)| tests.get(*package).is_some_and(|t| t != *sets)).map(|(p, s)| (p, s, &tests[p])).collect();
    assert!(
        differ.is_empty(),
        "the test build gives these crates other features than `make host` (package, host's, tests'), so they and \
         every crate above them are compiled twice: {differ:#?}\nalign the dev-dependency's features with the \
         host's, as tests/Cargo.toml does for rcgen"
    );
}
