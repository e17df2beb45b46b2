//! The corridor goes downward only: every `crate::ROOM` path in `host/src`
//! must name a room on a lower floor than the file's own (or, on floors
//! whose rooms are ordered, one later on the same floor). The floors are the
//! ones `host/src/lib.rs` lists; a new import that climbs fails here with the
//! file and line, before it can grow a circle.

use std::path::Path;

/// Top to bottom. `ordered`: a room may import the rooms after it on its floor;
/// otherwise the rooms of a floor import none of each other.
const FLOORS: &[(&[&str], bool)] = &[
    (&["fuzzing", "cli", "client", "server"], true),
    (&["oip", "video", "stream", "reload"], false),
    (&["route", "state", "turns", "http"], true),
    (&["upstream", "cache", "tls", "audit"], true),
    (&["snapshot", "chain", "plugin", "imaging"], true),
    (&["config", "ratelimit", "redis", "nn", "metrics"], true),
];

fn place(room: &str) -> Option<(usize, usize, bool)> {
    FLOORS.iter().enumerate().find_map(|(f, (rooms, ordered))| rooms.iter().position(|r| *r == room).map(|i| (f, i, *ordered)))
}

fn allowed(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    let ((ff, fi, ordered), (tf, ti, _)) = (place(from).unwrap(), place(to).unwrap());
    tf > ff || (tf == ff && ordered && ti > fi)
}

/// The room a file belongs to: its folder under `src/`, or its own name.
fn room_of(rel: &Path) -> String {
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_goes_down_a_floor() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut climbs = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let from = room_of(rel);
        if from == "main" || from == "lib" {
            continue;
        }
        assert!(place(&from).is_some(), "{}: room '{from}' is on no floor; add it to FLOORS here and to lib.rs's list", rel.display());
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let to: String = line[at + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if place(&to).is_none() {
                    continue; // an item of lib.rs, or another crate's `crate::` inside a macro
                }
                if !allowed(&from, &to) {
                    climbs.push(format!("{}:{}: {from} imports {to}, a floor above it", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(climbs.is_empty(), "imports that climb the corridor:\n{}", climbs.join("\n"));
}

#[test]
fn the_rule_refuses_a_climb() {
    assert!(allowed("server", "video"));
    assert!(allowed("route", "state"));
    assert!(!allowed("video", "server"), "a room may not import the server");
    assert!(!allowed("video", "oip"), "rooms on one floor import none of each other");
    assert!(!allowed("nn", "plugin"), "the models' floor may not import the plugins'");
    assert!(!allowed("state", "route"));
}
