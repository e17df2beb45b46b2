//! The ONNX Runtime library: found, loaded once per process, and explained
//! when it is missing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::NnError;

/// The library version setup fetches (see `models/fetch.py`).
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

/// Where the library is looked for: `ORT_DYLIB_PATH`, then the setup cache.
pub fn library_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    cache_dir().join("onnxruntime").join(ORT_LIBRARY)
}

/// `$OSPREY_CACHE`, else `~/.cache/osprey`: where setup keeps what it fetched.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("OSPREY_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("osprey")
}

/// Loads ONNX Runtime once; later calls return the same environment.
pub fn environment() -> Result<&'static ort::environment::Environment, NnError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = library_path();
    let env = load(&path)?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

fn load(path: &Path) -> Result<ort::environment::Environment, NnError> {
    if !path.is_file() {
        return Err(NnError::RuntimeMissing {
            path: path.to_path_buf(),
            why: "no such file".into(),
        });
    }
    let builder = ort::init_from(path).map_err(|e| NnError::RuntimeMissing {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    builder
        .with_name("osprey")
        .build()
        .map_err(|e| NnError::Runtime(format!("cannot start ONNX Runtime from {}: {e}", path.display())))
}
