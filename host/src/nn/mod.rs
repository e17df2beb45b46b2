//! Models: wasi-nn's `graph`s, backed by ONNX Runtime.
//!
//! - `runtime`: finds and loads the ONNX Runtime library, once per process.
//! - `model`: one model file as a pool of sessions, with its execution provider.
//! - `tensor`: the host-side tensor behind wasi-nn `tensor` handles.
//! - `wasi`: the wasi-nn host interface that plugins call (`load-by-name`, `compute`).

pub mod model;
pub mod runtime;
pub mod tensor;
pub mod wasi;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use model::{LoadSpec, Model, Provider, Target};
pub use tensor::{ElemType, Tensor, TensorData};

/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
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
}

/// The models of one snapshot, by name; shared by every request's store.
#[derive(Default, Clone)]
pub struct Registry {
    models: HashMap<String, Arc<Model>>,
}

impl Registry {
    pub fn insert(&mut self, model: Model) {
        self.models.insert(model.name().to_string(), Arc::new(model));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }
}
