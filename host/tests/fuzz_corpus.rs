//! The fuzzers' corpus as ordinary tests: every input kept under
//! `host/fuzz/corpus/<target>/` and every input a fuzzer crashed on, kept
//! under `host/fuzz/regressions/<target>/`, goes through the same entry
//! function as the fuzz target (`osprey::fuzzing`), whose assertions are the
//! ones the fuzzer checks. Runs on stable in a second or two; `make fuzz`
//! grows the corpus.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in [fuzz.join("corpus").join(target), fuzz.join("regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

/// Runs every input, then names each one that panicked (all of them, not
/// just the first).
fn run(target: &str, entry: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for fuzz target '{target}' under host/fuzz/corpus/{target}");
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).unwrap();
            std::panic::catch_unwind(|| entry(&data)).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{} of {} inputs of '{target}' panicked:\n{}", failed.len(), files.len(), failed.join("\n"));
}

#[test]
fn upload_corpus() {
    run("upload", osprey::fuzzing::upload);
}

#[test]
fn oip_corpus() {
    run("oip", osprey::fuzzing::oip);
}

#[test]
fn config_corpus() {
    run("config", osprey::fuzzing::config);
}

#[test]
fn image_corpus() {
    run("image", osprey::fuzzing::image);
}

#[test]
fn ffprobe_corpus() {
    run("ffprobe", osprey::fuzzing::ffprobe);
}

#[test]
fn plugin_output_corpus() {
    run("plugin_output", osprey::fuzzing::plugin_output);
}
