//! Models: wasi-nn's `graph`s, backed by ONNX Runtime.
//!
//! - `runtime`: finds and loads the ONNX Runtime library, once per process,
//!   with the shared intra-op thread pool and CPU arena.
//! - `pool`: the pool's size and the gate on model runs at once, all models together.
//! - `model`: one model file as a pool of sessions, with its execution provider.
//! - `scheduler`: the model's bounded queue and dynamic batching, one worker per session.
//! - `tensor`: the host-side tensor behind wasi-nn `tensor` handles.
//! - `remote`: a model run by another server (Open Inference Protocol), as
//!   traits the `upstream` floor implements: the network stays above this floor.
//!
//! The floor of the corridor: it imports nothing above it. The wasi-nn
//! interface plugins call lives a floor up, in `crate::plugin::wasi_nn`.

pub mod model;
pub mod pool;
pub mod remote;
pub mod scheduler;
pub mod runtime;
pub mod tensor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use model::{Identity, LoadSpec, Model, Provider, Target, Threads};
pub use pool::PoolSettings;
pub use remote::{Connector, NoRemotes, Opened, RemoteModel, RemoteSpec};
pub use scheduler::Batching;
pub use tensor::{ElemType, Tensor, TensorData};

/// Errors of the model layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NnError {
    #[error(
        "ONNX Runtime library not found at {path} ({why}); run `make setup` to fetch it, \
         or point ORT_DYLIB_PATH at libonnxruntime.so (pip download onnxruntime==1.31.1)"
    )]
    RuntimeMissing { path: PathBuf, why: String },
    #[error("model '{model}' from {file}: {why}")]
    Load { model: String, file: PathBuf, why: String },
    #[error("no model named '{0}'")]
    NotFound(String),
    #[error("invalid tensor: {0}")]
    InvalidTensor(String),
    #[error("{0}")]
    Runtime(String),
    #[error("model '{model}' has {size} requests waiting already; retry shortly")]
    QueueFull { model: String, size: usize },
    #[error("the deadline passed while the request waited for model '{model}'")]
    Deadline { model: String },
    /// A remote model's pool has no node to take the run now (none healthy,
    /// or the nodes answered 503/429): the host answers 503.
    #[error("model '{model}' is remote and unavailable: {why}")]
    Unavailable { model: String, why: String },
    /// A remote model's node failed the run or answered what this host cannot
    /// read: the host answers 502.
    #[error("model '{model}' is remote and its server failed: {why}")]
    RemoteFailed { model: String, why: String },
}

/// The models of one snapshot, shared by every request's store. A model is
/// reached as `name@version`, and as `name` for its newest version.
#[derive(Default, Clone)]
pub struct Registry {
    by_key: HashMap<String, Arc<Model>>,
    all: Vec<Arc<Model>>,
}

impl Registry {
    /// Adds the versions of one model, oldest first; the last is the newest.
    pub fn insert_versions(&mut self, versions: Vec<Arc<Model>>) {
        for m in &versions {
            let id = m.identity();
            self.by_key.insert(format!("{}@{}", id.name, id.version), m.clone());
            self.all.push(m.clone());
        }
        if let Some(newest) = versions.last() {
            self.by_key.insert(newest.name().to_string(), newest.clone());
        }
    }

    /// `name` (newest version) or `name@version`.
    pub fn get(&self, key: &str) -> Option<&Arc<Model>> {
        self.by_key.get(key)
    }

    /// Every loaded model version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.all.iter()
    }
}
