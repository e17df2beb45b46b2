//! A hundred reloads, each compiling a new plugin build and loading or
//! dropping a model version, leave the resident memory where it was.

use osprey::reload::{self, Outcome};
use osprey_tests::site::{model_bytes, variant, Site};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

#[test]
fn a_hundred_reloads_leave_rss_within_noise() {
    let site = Site::new("memory");
    let server = osprey_tests::start(&site.path("osprey.toml"));
    let original = std::fs::read(site.path("plugins/ssd.wasm")).unwrap();
    let model = model_bytes();
    let mut round = |i: usize| {
        std::fs::write(site.path("plugins/ssd.wasm"), variant(&original, &format!("m{i}"))).unwrap();
        let second = site.path("models/ssd/2");
        if i.is_multiple_of(2) {
            site.add_model_version(2, &model);
        } else {
            std::fs::remove_dir_all(&second).unwrap();
        }
        let record = reload::reload(&server.shared, "memory test");
        assert!(matches!(record.outcome, Outcome::Success { .. }), "reload {i}: {record:?}");
    };
    // Warm-up: allocator arenas and code caches reach their working size.
    (0..20).for_each(&mut round);
    let before = rss_mib();
    (20..120).for_each(&mut round);
    let after = rss_mib();
    eprintln!("RSS before 100 reloads {before:.1} MiB, after {after:.1} MiB");
    // One leaked snapshot would hold a 6 MB model and its sessions (~30 MiB);
    // a hundred would be gigabytes.
    assert!(after - before < 48.0, "RSS grew from {before:.1} to {after:.1} MiB over 100 reloads");
}
