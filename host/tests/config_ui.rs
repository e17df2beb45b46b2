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
        Ok(c) => assert_eq!(c.routes.len(), 9),
        Err(e) if e.to_string().contains("not found") => {
            eprintln!("skipped: models or plugins not set up yet ({e})")
        }
        Err(e) => panic!("{e}"),
    }
}

/// `osprey check` once said `ok` when a plugin's `file` was not a component
/// (here, a Cargo.toml): that surfaced only at the first reload. It compiles
/// every plugin now and names the one that cannot be used.
#[test]
fn check_compiles_every_plugin_and_names_what_is_not_a_component() {
    let dir = std::env::temp_dir().join(format!("osprey-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("osprey.toml");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    std::fs::write(&config, format!("[plugins.zone]\nfile = \"{}\"\n", manifest.display())).unwrap();
    let err = osprey::cli::check(&config).expect_err("a Cargo.toml is not a plugin").to_string();
    assert!(err.contains("1 of 1 plugins cannot be used"), "{err}");
    assert!(err.contains("plugin 'zone'") && err.contains("not a valid component"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
