//! Plugins: WASM components of the `osprey:plugin` world, each a stage of a chain.
//!
//! - `bindings`: the world's host-side bindings.
//! - `engine`: the wasmtime engine (pooling allocator, epoch ticker) and compiling plugins.
//! - `sandbox`: a fresh store per request runs the stages: limits, deadline, outcome.
//! - `store`: what a store holds: the host interfaces' contexts and the memory cap.
//! - `imports`: the `types`, `imaging` and `host` interfaces plugins import.
//! - `wasi_nn`: the wasi-nn interface plugins import, over the models of `crate::nn`.

pub mod bindings;
mod compiled;
pub mod engine;
pub mod inspect;
mod imports;
pub mod sandbox;
mod store;
pub mod wasi_nn;

pub use engine::{Engine, Plugin, SandboxLimits};
pub use sandbox::{check_settings, Outcome, Sandbox};

use crate::imaging::ImagingError;

/// The upload as a host resource (`osprey:plugin/types.blob`), or bytes a stage made.
#[derive(Debug)]
pub struct Blob {
    pub content_type: String,
    pub bytes: bytes::Bytes,
}

/// How a stage refused its input, as the plugin said (see `error-kind` in the WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageErrorKind {
    BadImage,
    BadInput,
    UnsupportedType,
    TooLarge,
    BadSettings,
    ModelFailed,
    Internal,
}

/// Errors of the plugin layer.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin '{plugin}' from {path}: {why}")]
    Load { plugin: String, path: String, why: String },
    #[error("plugin '{plugin}' refused the request: {message}")]
    Stage { plugin: String, kind: StageErrorKind, message: String },
    #[error("plugin '{plugin}' trapped: {why}")]
    Trap { plugin: String, why: String },
    /// The plugin's own check of a stage's settings refused them (at load,
    /// never per request).
    #[error("plugin '{plugin}' refuses its settings: {message}")]
    Settings { plugin: String, message: String },
    #[error("plugin '{plugin}' ran past {}", which_deadline(.plugin, .own_ms))]
    Deadline { plugin: String, own_ms: Option<u64> },
    #[error("{0}")]
    Overloaded(String),
    /// A remote model's pool had no node to run it.
    #[error("{0}")]
    ModelUnavailable(String),
    /// A remote model's server failed the run.
    #[error("{0}")]
    RemoteFailed(String),
    #[error("plugin '{plugin}' exceeded its memory limit of {limit_mib} MiB")]
    OutOfMemory { plugin: String, limit_mib: u64 },
    #[error("sandbox: {0}")]
    Sandbox(String),
}

impl From<&ImagingError> for StageErrorKind {
    fn from(e: &ImagingError) -> Self {
        match e {
            ImagingError::Unsupported => StageErrorKind::UnsupportedType,
            ImagingError::TooLarge { .. } => StageErrorKind::TooLarge,
            ImagingError::Corrupt(_) => StageErrorKind::BadImage,
            ImagingError::BadSpec(_) => StageErrorKind::BadSettings,
        }
    }
}

/// Which deadline a stage ran past: its plugin's own (`own_ms`) or the route's.
fn which_deadline(plugin: &str, own_ms: &Option<u64>) -> String {
    match own_ms {
        Some(ms) => format!("its own deadline of {ms} ms ([plugins.{plugin}] deadline_ms)"),
        None => "the route's deadline".into(),
    }
}
