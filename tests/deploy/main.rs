//! The container image recipe and the Kubernetes manifests, checked offline:
//! `deploy/check.py` (Kubernetes' JSON schemas from the pinned
//! kubernetes-validate, dockerfile-parse, hadolint; see its header) on the
//! real files, its own cases that break one thing each, a broken fixture
//! (`tests/deploy/broken/`), and the nodes' config through osprey's own
//! config loader. The venv comes from `make deploy-deps` (a stamp: a no-op
//! once built); nothing here needs a cluster or the network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn python() -> PathBuf {
    let made = Command::new("make").args(["-s", "-C"]).arg(osprey_tests::repo()).arg("deploy-deps").output().expect("run make");
    assert!(made.status.success(), "`make deploy-deps` failed:\n{}{}", text(&made.stdout), text(&made.stderr));
    osprey::nn::runtime::cache_dir().join("venv-deploy/bin/python")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check(args: &[&str]) -> Output {
    let repo = osprey_tests::repo();
    let python = python();
    Command::new(&python)
        .arg(repo.join("deploy/check.py"))
        .args(args)
        .current_dir(&repo)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("osprey-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn the_image_and_the_manifests_pass_the_check() {
    let out = temp_dir("configs");
    let run = check(&["--write-configs", out.to_str().expect("utf-8 temp path")]);
    let (stdout, stderr) = (text(&run.stdout), text(&run.stderr));
    assert!(run.status.success(), "deploy/check.py found problems:\n{stdout}{stderr}");
    assert!(stdout.contains("deploy-check: ok"), "{stdout}{stderr}");
    println!("{stdout}");

    // The node config as osprey itself loads it: the image's /opt/osprey
    // stands in as a tree of links to what `make setup` built here.
    let node = std::fs::read_to_string(out.join("osprey-node.toml")).expect("the node ConfigMap's TOML");
    let root = temp_dir("opt");
    link(&osprey::nn::runtime::cache_dir().join("models"), &root.join("models"));
    link(&osprey_tests::repo().join("target"), &root.join("target"));
    let node = node.replace("/opt/osprey/", &format!("{}/", root.display()));
    if let Err(e) = osprey::config::parse(&node, &root.join("osprey-node.toml")) {
        panic!("deploy/kubernetes/node-config.yaml does not load in osprey:\n{e}");
    }

    // The gateway's config as osprey loads it; only its certificate files,
    // which a Secret mounts in the pod, do not exist here.
    let gateway = std::fs::read_to_string(out.join("osprey-gateway.toml")).expect("the gateway ConfigMap's TOML");
    if let Err(e) = osprey::config::parse(&gateway, &root.join("osprey-gateway.toml")) {
        let other: Vec<&str> = e.diagnostics().iter().map(|d| d.message.as_str()).filter(|m| !m.starts_with("[tls] cert") && !m.starts_with("[tls] key")).collect();
        assert!(other.is_empty(), "deploy/kubernetes/gateway-config.yaml does not load in osprey:\n{e}");
    }
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&root);
}

fn link(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap_or_else(|e| panic!("link {} -> {}: {e}", at.display(), target.display()));
}

#[test]
fn the_check_catches_each_broken_case() {
    let repo = osprey_tests::repo();
    let python = python();
    let run = Command::new(&python)
        .args(["-m", "unittest", "-q", "test_check"])
        .current_dir(repo.join("deploy"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(run.status.success(), "deploy/test_check.py failed:\n{}{}", text(&run.stdout), text(&run.stderr));
}

#[test]
fn a_broken_manifest_fails_the_check() {
    let run = check(&["--kubernetes", "tests/deploy/broken", "--no-hadolint"]);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "want exit 1 on tests/deploy/broken:\n{stdout}{}", text(&run.stderr));
    for fault in [
        "resource missing.yaml does not exist",
        "'readinesProbe' was unexpected",
        "securityContext.runAsNonRoot must be true",
        "securityContext.readOnlyRootFilesystem must be true",
        "a GPU node without resources.limits nvidia.com/gpu",
        "ConfigMap osprey-node is not in the manifests",
    ] {
        assert!(stdout.contains(fault), "deploy/check.py did not report `{fault}`:\n{stdout}");
    }
}
