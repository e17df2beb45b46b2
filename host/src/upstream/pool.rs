//! The nodes of one pool, and which one takes the next request: the healthy
//! node with the fewest requests in flight, below its cap. When every healthy
//! node is at its cap the request waits for a slot, up to its deadline.
//! Listed nodes stay for the pool's life; nodes that dial in `join` while
//! their tunnel lives and `leave` when it ends.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde_json::json;
use tokio::sync::Notify;

use super::node::Node;
use super::UpstreamError;
use crate::config::UpstreamDef;
use crate::metrics::NodeLabels;

pub struct Pool {
    pub def: UpstreamDef,
    /// Read for every pick, written only when a tunnel comes or goes.
    nodes: RwLock<Vec<Arc<Node>>>,
    /// Woken when a slot frees or a node comes back.
    freed: Notify,
}

/// A slot on a node, given back (and a waiter woken) when dropped.
pub struct Lease {
    pool: Arc<Pool>,
    pub node: Arc<Node>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.node.give_back();
        self.pool.inflight_gauge(&self.node);
        self.pool.freed.notify_one();
    }
}

enum Pick {
    Got(Arc<Node>),
    /// Healthy nodes exist, all at their cap.
    Busy,
    NoneHealthy,
}

impl Pool {
    pub fn new(def: UpstreamDef) -> Self {
        let nodes: Vec<Arc<Node>> = def.nodes.iter().map(|u| Arc::new(Node::new(u.clone(), def.connect_timeout))).collect();
        for n in &nodes {
            health_gauge(&def.name, n);
        }
        let pool = Pool { def, nodes: RwLock::new(nodes), freed: Notify::new() };
        if pool.accepts_tunnels() {
            pool.tunnels_gauge();
        }
        pool
    }

    /// The nodes now in the pool, listed ones first.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The nodes that dialled in and are connected.
    pub fn tunnels(&self) -> Vec<Arc<Node>> {
        self.nodes().into_iter().filter(|n| n.is_tunnel()).collect()
    }

    pub fn accepts_tunnels(&self) -> bool {
        self.def.tunnel_token.is_some()
    }

    /// A node that dialled in joins; requests waiting for a slot may take it.
    pub fn join(&self, node: Arc<Node>) {
        health_gauge(&self.def.name, &node);
        self.inflight_gauge(&node);
        self.nodes.write().unwrap_or_else(|p| p.into_inner()).push(node);
        self.tunnels_gauge();
        self.freed.notify_waiters();
    }

    /// A node leaves (its tunnel ended); false if it was not here. Its
    /// gauges go with it: a tunnel's label (its peer's port) is never seen again.
    pub fn leave(&self, node: &Node) -> bool {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let before = nodes.len();
        nodes.retain(|n| !std::ptr::eq(n.as_ref(), node));
        let left = nodes.len() < before;
        drop(nodes);
        if left {
            let metrics = crate::metrics::global();
            metrics.upstream_healthy.remove(&self.labels(node));
            metrics.upstream_inflight.remove(&self.labels(node));
            self.tunnels_gauge();
        }
        left
    }

    pub fn describe(&self) -> String {
        let mut listed: Vec<&str> = self.def.nodes.iter().map(|u| u.as_str().trim_end_matches('/')).collect();
        if self.accepts_tunnels() {
            listed.push("nodes that dial in");
        }
        listed.join(", ")
    }

    pub fn status(&self) -> serde_json::Value {
        let all = self.nodes();
        let nodes: Vec<_> = all.iter().map(|n| json!({"node": n.label, "healthy": n.healthy(), "in_flight": n.inflight()})).collect();
        let mut status = json!({"healthy": all.iter().filter(|n| n.healthy()).count(), "nodes": nodes});
        if self.accepts_tunnels() {
            status["tunnels"] = all.iter().filter(|n| n.is_tunnel()).count().into();
        }
        status
    }

    /// A slot on the least busy healthy node other than `avoid`, waiting up to
    /// `until` while every such node is at its cap.
    pub async fn lease(self: &Arc<Self>, avoid: Option<&Node>, until: Instant) -> Result<Lease, UpstreamError> {
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pick(avoid) {
                Pick::Got(node) => {
                    self.inflight_gauge(&node);
                    return Ok(Lease { pool: self.clone(), node });
                }
                Pick::NoneHealthy => return Err(UpstreamError::NoHealthyNode { pool: self.def.name.clone(), nodes: self.nodes.read().unwrap_or_else(|p| p.into_inner()).len() }),
                Pick::Busy => {}
            }
            if tokio::time::timeout_at(until.into(), notified).await.is_err() {
                return Err(UpstreamError::Deadline { pool: self.def.name.clone() });
            }
        }
    }

    fn pick(&self, avoid: Option<&Node>) -> Pick {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let mut healthy: Vec<&Arc<Node>> = nodes.iter().filter(|n| n.healthy() && !avoid.is_some_and(|a| std::ptr::eq(a, n.as_ref()))).collect();
        if healthy.is_empty() {
            return Pick::NoneHealthy;
        }
        healthy.sort_by_key(|n| n.inflight());
        healthy.into_iter().find(|n| n.try_take(self.def.max_inflight_per_node)).map_or(Pick::Busy, |n| Pick::Got(n.clone()))
    }

    /// Takes a node out (a failed connection) or puts it back (a health check).
    pub fn mark(&self, node: &Node, healthy: bool, why: &str) {
        if node.set_healthy(healthy) {
            if healthy {
                tracing::info!(upstream = self.def.name, node = node.label, "node back in the pool");
                self.freed.notify_waiters();
            } else {
                tracing::warn!(upstream = self.def.name, node = node.label, "node out of the pool: {why}");
            }
            health_gauge(&self.def.name, node);
        }
    }

    pub(super) fn labels(&self, node: &Node) -> NodeLabels {
        NodeLabels { upstream: self.def.name.clone(), node: node.label.clone() }
    }

    fn inflight_gauge(&self, node: &Node) {
        crate::metrics::global().upstream_inflight.get_or_create(&self.labels(node)).set(node.inflight() as i64);
    }

    fn tunnels_gauge(&self) {
        let n = self.nodes.read().unwrap_or_else(|p| p.into_inner()).iter().filter(|n| n.is_tunnel()).count();
        crate::metrics::global().upstream_tunnels.get_or_create(&crate::metrics::UpstreamLabel { upstream: self.def.name.clone() }).set(n as i64);
    }
}

fn health_gauge(pool: &str, node: &Node) {
    let labels = NodeLabels { upstream: pool.to_string(), node: node.label.clone() };
    crate::metrics::global().upstream_healthy.get_or_create(&labels).set(i64::from(node.healthy()));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pool(nodes: usize, cap: usize) -> Arc<Pool> {
        let nodes = (0..nodes).map(|i| url::Url::parse(&format!("http://127.0.0.1:{}", 9000 + i)).unwrap()).collect();
        Arc::new(Pool::new(UpstreamDef { name: "p".into(), nodes, max_inflight_per_node: cap, health_interval: Duration::from_secs(1), connect_timeout: Duration::from_secs(1), tunnel_token: None, health_path: "/readyz".into() }))
    }

    #[tokio::test]
    async fn the_least_busy_healthy_node_takes_the_next_request() {
        let p = pool(3, 4);
        let far = Instant::now() + Duration::from_secs(1);
        let a = p.lease(None, far).await.unwrap();
        let b = p.lease(None, far).await.unwrap();
        let c = p.lease(None, far).await.unwrap();
        let mut used: Vec<&str> = [&a, &b, &c].iter().map(|l| l.node.label.as_str()).collect();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), 3, "three requests spread over three nodes");
        p.mark(&p.nodes()[0], false, "test");
        for _ in 0..4 {
            assert_ne!(p.lease(None, far).await.unwrap().node.label, p.nodes()[0].label, "an unhealthy node takes nothing");
        }
        let other = p.lease(Some(&b.node), far).await.unwrap();
        assert!(!std::ptr::eq(other.node.as_ref(), b.node.as_ref()), "a retry avoids the node that failed");
    }

    #[tokio::test]
    async fn a_full_pool_waits_for_a_slot_until_the_deadline() {
        let p = pool(1, 1);
        let held = p.lease(None, Instant::now() + Duration::from_secs(1)).await.unwrap();
        let err = p.lease(None, Instant::now() + Duration::from_millis(30)).await.err().unwrap();
        assert!(matches!(err, UpstreamError::Deadline { .. }), "{err}");
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.lease(None, Instant::now() + Duration::from_secs(5)).await.map(|l| l.node.label.clone()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiter.await.unwrap().is_ok(), "the freed slot goes to the waiter");
        p.mark(&p.nodes()[0], false, "test");
        assert!(matches!(p.lease(None, Instant::now() + Duration::from_secs(1)).await.err().unwrap(), UpstreamError::NoHealthyNode { .. }));
    }
}
