//! Remote models: a model whose runs happen on another server that speaks the
//! Open Inference Protocol v2 (another osprey, Triton, KServe, MLServer,
//! OpenVINO Model Server), reached through an upstream pool.
//!
//! This floor only says what it needs (`RemoteModel`: run named tensors;
//! `Connector`: learn a model's ports and hand back its `RemoteModel`); the
//! `upstream` floor, above, implements both with its pools, and the snapshot
//! is handed a `Connector` when it is built. So `nn` and `plugin` never
//! import the network, and a plugin cannot tell a remote model from a local one.

use std::sync::Arc;
use std::time::Instant;

use super::model::Port;
use super::{NnError, Tensor};

/// `[models.NAME] remote = { upstream, model, version }`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// The `[upstreams.NAME]` pool whose nodes serve the model.
    pub upstream: String,
    /// The model's name on those nodes.
    pub model: String,
    /// A pinned version; `None` asks the nodes for their newest.
    pub version: Option<String>,
}

impl RemoteSpec {
    /// Where the model lives, as admin answers and logs show it.
    pub fn location(&self) -> String {
        match &self.version {
            Some(v) => format!("oip://{}/{}/versions/{v}", self.upstream, self.model),
            None => format!("oip://{}/{}", self.upstream, self.model),
        }
    }
}

/// One model on a remote server, able to run named inputs.
pub trait RemoteModel: Send + Sync {
    /// Runs the model on its inputs (named as the model names them, in its
    /// order) and returns every output. Blocking, up to `deadline`: callers
    /// are blocking-pool threads, never async workers.
    fn infer(&self, inputs: Vec<(String, Tensor)>, deadline: Instant) -> Result<Vec<(String, Tensor)>, NnError>;
}

/// What a remote server says about a model, and the handle to run it.
pub struct Opened {
    /// The version the server serves under this name.
    pub version: String,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    /// A digest of the metadata, for the cache keys of the routes that use it.
    pub digest: String,
    pub backend: Arc<dyn RemoteModel>,
}

/// Opens remote models at snapshot build: asks the server for the model's
/// metadata (blocking; called from the thread that builds the snapshot).
pub trait Connector {
    fn open(&self, name: &str, spec: &RemoteSpec) -> Result<Opened, NnError>;
}

/// The connector of a snapshot built without upstream pools (tests, tools):
/// every remote model fails to load, saying why.
pub struct NoRemotes;

impl Connector for NoRemotes {
    fn open(&self, name: &str, spec: &RemoteSpec) -> Result<Opened, NnError> {
        Err(NnError::Load {
            model: name.to_string(),
            file: spec.location().into(),
            why: "this snapshot was built without upstream pools, so remote models cannot be reached".into(),
        })
    }
}
