//! What a component is, measured against the world this host runs:
//! `osprey plugin check FILE.wasm`, and the version check every compile makes.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::engine::{hex, Engine};

/// The `osprey:plugin` version of the host's own `wit/plugin.wit`.
pub fn wit_version() -> &'static str {
    const WIT: &str = include_str!("../../../wit/plugin.wit");
    WIT.lines()
        .find_map(|l| l.trim().strip_prefix("package osprey:plugin@"))
        .map_or("unknown", |v| v.trim_end_matches(';'))
}

/// Whether a component built for `osprey:plugin@theirs` runs on this host:
/// the semver rule of the WIT policy (README, "Writing a plugin"): on 0.x the
/// minor version must match, from 1.0 the major, and the host's must not be
/// older than the plugin's.
pub fn compatible(theirs: &str, ours: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut it = v.split(['.', '-', '+']).map(str::parse::<u64>);
        Some((it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?))
    };
    let (Some(t), Some(o)) = (parse(theirs), parse(ours)) else { return false };
    let same_line = if o.0 == 0 { t.0 == 0 && t.1 == o.1 } else { t.0 == o.0 };
    same_line && t <= o
}

/// The version of `osprey:plugin/stage` a component exports, if any.
pub fn exported_version(engine: &wasmtime::Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let version = ty.exports(engine).find_map(|(name, _)| name.strip_prefix("osprey:plugin/stage@").map(str::to_string));
    version
}

/// Why a component cannot be a stage of this host, by its exports; `None`
/// when it exports a compatible `osprey:plugin/stage`.
pub fn export_problem(engine: &wasmtime::Engine, component: &Component) -> Option<String> {
    let ours = wit_version();
    match exported_version(engine, component) {
        None => {
            let exports: Vec<String> = component.component_type().exports(engine).map(|(n, _)| n.to_string()).collect();
            Some(format!(
                "exports no osprey:plugin/stage (it exports: {}); a plugin implements `world plugin` of osprey:plugin@{ours}",
                if exports.is_empty() { "nothing".into() } else { exports.join(", ") }
            ))
        }
        Some(theirs) if !compatible(&theirs, ours) => Some(format!(
            "built for osprey:plugin@{theirs}; this host runs osprey:plugin@{ours}: rebuild it against this host's wit/ \
             (a 0.x minor version, or from 1.0 a major version, changes the world incompatibly)"
        )),
        Some(_) => None,
    }
}

/// A component's `check` of `osprey:plugin/settings`, found by semver as the
/// stage is (a 0.1.x plugin's export answers); `None` when it has none.
pub fn settings_export(component: &Component) -> Option<wasmtime::component::ComponentExportIndex> {
    let interface = component.get_export_index(None, format!("osprey:plugin/settings@{}", wit_version()))?;
    component.get_export_index(Some(&interface), "check")
}

/// What `osprey plugin check` prints.
pub struct Report {
    pub bytes: usize,
    pub sha256: String,
    pub compile: Duration,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub memories: u32,
    pub initial_memory_bytes: u64,
    pub tables: u32,
    /// Whether it exports `osprey:plugin/settings` (0.1.1), so its settings are checked before serving.
    pub checks_settings: bool,
    /// Why it does not fit, when it does not.
    pub problem: Option<String>,
}

/// Compiles `bytes` on `engine` and checks it against the world, the way a
/// server would load it; `Err` when it is not a component at all.
pub fn inspect(engine: &Engine, bytes: &[u8]) -> Result<Report, String> {
    let started = Instant::now();
    let component = Component::new(&engine.engine, bytes).map_err(|e| {
        let core = is_core_module(bytes);
        match core {
            true => "a core WebAssembly module, not a component: build for the wasm32-wasip2 target \
                     (cargo build --target wasm32-wasip2), or wrap it with `wasm-tools component new`"
                .to_string(),
            false => format!("not a WebAssembly component: {e}"),
        }
    })?;
    let compile = started.elapsed();
    let ty = component.component_type();
    let exports = ty.exports(&engine.engine).map(|(n, _)| n.to_string()).collect();
    let imports = ty.imports(&engine.engine).map(|(n, _)| n.to_string()).collect();
    let resources = component.resources_required();
    let problem = export_problem(&engine.engine, &component).or_else(|| engine.link_problem(&component).map(|why| with_hint(&why)));
    Ok(Report {
        bytes: bytes.len(),
        sha256: hex(&Sha256::digest(bytes)),
        compile,
        exports,
        imports,
        memories: resources.as_ref().map_or(0, |r| r.num_memories),
        initial_memory_bytes: resources.as_ref().and_then(|r| r.max_initial_memory_size).unwrap_or(0) * 65536,
        tables: resources.as_ref().map_or(0, |r| r.num_tables),
        checks_settings: settings_export(&component).is_some(),
        problem,
    })
}

/// The linker's words, and what to do about the imports authors meet most.
fn with_hint(why: &str) -> String {
    let hint = if why.contains("wasi:http") {
        "; Osprey gives plugins no network: build without an HTTP handler (componentize-js: leave out `-d http`; \
         Rust: do not depend on wasi-http)"
    } else if why.contains("wasi:sockets") {
        "; Osprey gives plugins no sockets"
    } else {
        ""
    };
    format!("{why}{hint}")
}

/// A core module starts with `\0asm` and version 1; a component with the
/// same magic and a layer of 1 (bytes 6..8).
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_knows_its_world_version_and_the_semver_rule() {
        assert_eq!(wit_version(), "0.1.1");
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.0", "0.1.3"), "a patch of the host runs older plugins of its minor");
        assert!(!compatible("0.1.4", "0.1.3"), "a plugin newer than the host may use what it lacks");
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(!compatible("0.0.9", "0.1.0"));
        assert!(compatible("1.0.0", "1.4.0"));
        assert!(!compatible("2.0.0", "1.4.0"));
        assert!(!compatible("nonsense", "0.1.0"));
    }
}
