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
//! - `tunnel`: nodes that dial in (`GET /v1/tunnel`, token checked, then
//!   HTTP/2 over the connection the node opened) and stay while it lives.
//! - `remote`: remote models (`[models.NAME] remote = ...`): `nn`'s
//!   connector and remote backend, as Open Inference Protocol calls through `forward`.
//!
//! Pools outlive snapshots: a reload keeps a pool whose settings did not
//! change (its connections, counts and tunnels with it) and replaces the
//! others, handing their tunnels to the new pool when it takes the same token.

mod forward;
mod health;
pub mod node;
pub mod pool;
mod remote;
pub mod tunnel;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use forward::{forward, Forwarded, Outgoing, DEADLINE_HEADER, NODE_HEADER};
use node::Node;
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
    #[error("a tunnel needs GET /v1/tunnel over HTTP/1.1 with `Connection: upgrade` and `Upgrade: osprey-tunnel`, and {0}")]
    TunnelRequest(String),
    #[error("no pool '{0}' takes nodes that dial in; check [gateway] pool on the node and tunnel_token_env on the gateway")]
    TunnelPool(String),
    #[error("wrong tunnel token for pool '{0}'; the node's [gateway] token_env and the gateway's tunnel_token_env must hold the same token")]
    TunnelToken(String),
}

/// Every pool of the running config, by name. Cloning gives another handle
/// on the same pools (a tunnel's task keeps one to leave its pool).
#[derive(Clone)]
pub struct Pools {
    pools: Arc<Mutex<HashMap<String, Arc<Pool>>>>,
    /// Health checks run on this runtime; reloads call `sync` from blocking threads.
    runtime: Option<tokio::runtime::Handle>,
}

impl Pools {
    /// The pools of `defs`, their health checks started on the current
    /// runtime (none when called outside one, as in unit tests).
    pub fn new(defs: &[UpstreamDef]) -> Self {
        let pools = Pools { pools: Arc::default(), runtime: tokio::runtime::Handle::try_current().ok() };
        pools.sync(defs);
        pools
    }

    /// Brings the pools in line with a new config: unchanged ones are kept,
    /// changed ones rebuilt, removed ones dropped (their health checks end
    /// with them; requests already forwarded keep their node). The tunnels of
    /// a rebuilt pool that takes the same token move to the new one; others
    /// are closed, and their nodes dial again (to be let in or refused anew).
    pub fn sync(&self, defs: &[UpstreamDef]) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut moving: HashMap<String, Vec<Arc<Node>>> = HashMap::new();
        pools.retain(|name, pool| {
            let new = defs.iter().find(|d| &d.name == name);
            if new == Some(&pool.def) {
                return true;
            }
            let tunnels = pool.tunnels();
            if new.is_some_and(|d| d.tunnel_token.is_some() && d.tunnel_token == pool.def.tunnel_token) {
                moving.insert(name.clone(), tunnels);
            } else {
                tunnels.iter().for_each(|t| t.close());
            }
            false
        });
        for def in defs {
            if pools.contains_key(&def.name) {
                continue;
            }
            let pool = Arc::new(Pool::new(def.clone()));
            for node in moving.remove(&def.name).unwrap_or_default() {
                pool.join(node);
            }
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

    /// A tunnel's node leaves the pool of that name, whichever pool holds it
    /// now (a reload may have moved it to a rebuilt one).
    pub fn leave(&self, pool: &str, node: &Node) {
        if let Ok(p) = self.get(pool) {
            p.leave(node);
        }
    }

    /// Each pool's nodes and whether they are healthy, for `/readyz`.
    pub fn status(&self) -> serde_json::Value {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = pools.keys().collect();
        names.sort();
        names.into_iter().map(|n| (n.clone(), pools[n].status())).collect::<serde_json::Map<_, _>>().into()
    }
}
