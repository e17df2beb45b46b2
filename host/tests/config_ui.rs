//! Snapshot tests of config errors: each `config_ui/NAME.toml` must fail to
//! load with exactly the text in `config_ui/NAME.err`.
//! Run with `OSPREY_BLESS=1` to rewrite the `.err` files after a deliberate change.

use std::path::Path;

#[test]
fn bad_configs_fail_with_located_messages() {
    let dir = Path::new("tests/config_ui");
    let mut cases: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    cases.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    cases.sort();
    assert!(cases.len() >= 4, "expected the config_ui cases, found {cases:?}");
    let mut mismatches = Vec::new();
    for case in &cases {
        let err = match osprey::config::load(case) {
            Ok(_) => panic!("{} should not load", case.display()),
            Err(e) => format!("{e}\n"),
        };
        let expected_path = case.with_extension("err");
        if std::env::var_os("OSPREY_BLESS").is_some() {
            std::fs::write(&expected_path, &err).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if err != expected {
            mismatches.push(format!("--- {}\nexpected:\n{expected}\ngot:\n{err}", case.display()));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn default_config_parses_when_set_up() {
    // The default config names files that `make setup` creates; it must be valid then.
    let path = Path::new("../config/osprey.toml");
    match osprey::config::load(path) {
        Ok(c) => assert_eq!(c.routes.len(), 7),
        Err(e) if e.to_string().contains("not found") => {
            eprintln!("skipped: models or plugins not set up yet ({e})")
        }
        Err(e) => panic!("{e}"),
    }
}
