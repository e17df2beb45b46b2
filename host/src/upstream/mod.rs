//! Pools of osprey nodes that a gateway forwards routes to
//! (`[upstreams.NAME]`, a route's `upstream = "NAME"`). The gateway keeps
//! its own TLS, buckets, cache and body limits, then sends the upload (the
//! bytes, not tensors) to the healthy node with the fewest requests in
//! flight, over one multiplexed HTTP/2 connection per node.
//!
//! - `node`: one node: its connection (made on demand, remade when it
//!   closes), its health, what it has in flight.
//! - `pool`: the nodes of one pool, and picking the least busy healthy one.
//! - `health`: asks every node's `/readyz`, taking nodes out and back.
//! - `forward`: one upload to a node, retried once on another when the
//!   first never answered (refused, reset) or answered 503.
//! - `remote`: remote models (`[models.NAME] remote = ...`): `nn`'s
//!   connector and remote backend, as Open Inference Protocol calls through `forward`.
//!
//! Pools outlive snapshots: a reload keeps a pool whose settings did not
//! change (its connections and counts with it) and replaces the others.

mod forward;
mod health;
pub mod node;
pub mod pool;
mod remote;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};


pub use forward::{forward, Forwarded, Outgoing, DEADLINE_HEADER, NODE_HEADER};
pub use pool::Pool;
pub use remote::Remotes;

use crate::config::UpstreamDef;

/// Errors of the upstream layer; `respond::error` gives each its HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream '{pool}' has no healthy node (of {nodes}); retry shortly")]
    NoHealthyNode { pool: String, nodes: usize },
    #[error("upstream '{pool}': the route's deadline passed before a node answered")]
    Deadline { pool: String },
    #[error("upstream '{pool}': node {node} failed: {why}")]
    NodeFailed { pool: String, node: String, why: String },
    #[error("upstream '{0}' is not configured (it was removed by a reload)")]
    Unknown(String),
}

/// Every pool of the running config, by name.
pub struct Pools {
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// Health checks run on this runtime; reloads call `sync` from blocking threads.
    runtime: Option<tokio::runtime::Handle>,
}

impl Pools {
    /// The pools of `defs`, their health checks started on the current
    /// runtime (none when called outside one, as in unit tests).
    pub fn new(defs: &[UpstreamDef]) -> Self {
        let pools = Pools { pools: Mutex::new(HashMap::new()), runtime: tokio::runtime::Handle::try_current().ok() };
        pools.sync(defs);
        pools
    }

    /// Brings the pools in line with a new config: unchanged ones are kept,
    /// changed ones rebuilt, removed ones dropped (their health checks end
    /// with them; requests already forwarded keep their node).
    pub fn sync(&self, defs: &[UpstreamDef]) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|name, pool| defs.iter().any(|d| &d.name == name && d == &pool.def));
        for def in defs {
            if pools.contains_key(&def.name) {
                continue;
            }
            let pool = Arc::new(Pool::new(def.clone()));
            if let Some(rt) = &self.runtime {
                rt.spawn(health::run(Arc::downgrade(&pool)));
            }
            tracing::info!(upstream = def.name, nodes = def.nodes.len(), "upstream pool ready: {}", pool.describe());
            pools.insert(def.name.clone(), pool);
        }
    }

    /// The runtime the pools' connections and checks run on.
    pub fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.as_ref()
    }

    pub fn get(&self, name: &str) -> Result<Arc<Pool>, UpstreamError> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned().ok_or_else(|| UpstreamError::Unknown(name.into()))
    }

    /// Each pool's nodes and whether they are healthy, for `/readyz`.
    pub fn status(&self) -> serde_json::Value {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = pools.keys().collect();
        names.sort();
        names.into_iter().map(|n| (n.clone(), pools[n].status())).collect::<serde_json::Map<_, _>>().into()
    }
}
