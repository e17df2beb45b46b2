//! Nodes that dial in. A node behind NAT opens a connection to the gateway
//! and asks `GET /v1/tunnel` over HTTP/1.1 with `Upgrade: osprey-tunnel`,
//! naming its pool and node and presenting the pool's token. Once admitted
//! (`admit`) and answered 101, the gateway is the HTTP/2 *client* on that
//! connection (`serve`) and the node its server: the node joins its pool as
//! a node like any other while the connection lives and leaves when it ends,
//! however it ends (GOAWAY, reset, failed pings). A request it never
//! answered is retried on another node by `forward`'s rule.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{HeaderMap, AUTHORIZATION, CONNECTION, UPGRADE};
use hyper::Version;

use super::node::{self, Node};
use super::{Pool, Pools, UpstreamError};
use crate::config::valid_node_name;

/// Where nodes dial in; routes may not take it.
pub const PATH: &str = "/v1/tunnel";
/// The `Upgrade` protocol a node asks for.
pub const PROTOCOL: &str = "osprey-tunnel";
pub const POOL_HEADER: &str = "x-osprey-pool";
pub const NAME_HEADER: &str = "x-osprey-node-name";

/// A node let in: the pool it joins and the name it gave.
pub struct Admitted {
    pub pool: Arc<Pool>,
    pub name: String,
}

/// Checks a node's request to dial in: an HTTP/1.1 upgrade, a pool that
/// takes tunnels, a plain node name, and the pool's token.
pub fn admit(pools: &Pools, version: Version, headers: &HeaderMap) -> Result<Admitted, UpstreamError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // HTTP/2 has no upgrade: a node must offer only http/1.1 in ALPN.
    let upgrade = version == Version::HTTP_11
        && header(CONNECTION.as_str()).is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
        && header(UPGRADE.as_str()).is_some_and(|u| u.trim().eq_ignore_ascii_case(PROTOCOL));
    if !upgrade {
        return Err(UpstreamError::TunnelRequest("this request is not one".into()));
    }
    let pool_name = header(POOL_HEADER).ok_or_else(|| UpstreamError::TunnelRequest(format!("{POOL_HEADER} names the pool")))?;
    let name = header(NAME_HEADER)
        .filter(|n| valid_node_name(n))
        .ok_or_else(|| UpstreamError::TunnelRequest(format!("{NAME_HEADER} names the node (letters, digits, '-', '_', '.')")))?;
    let pool = pools.get(pool_name).ok().filter(|p| p.accepts_tunnels()).ok_or_else(|| UpstreamError::TunnelPool(pool_name.into()))?;
    let given = header(AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    let known = pool.def.tunnel_token.as_ref().filter(|t| !t.expose().is_empty());
    if !known.is_some_and(|t| t.matches(given)) {
        return Err(UpstreamError::TunnelToken(pool_name.into()));
    }
    Ok(Admitted { pool, name: name.into() })
}

/// After the 101: waits for the connection hyper hands over, then serves it.
pub fn open(pools: Pools, admitted: Admitted, peer: SocketAddr, upgrade: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve(pools, admitted, peer, io).await,
            Err(e) => tracing::warn!(%peer, "tunnel upgrade failed: {e}"),
        }
    });
}

/// The gateway's end of one tunnel: an HTTP/2 client on it, and the node in
/// its pool until the connection ends (or a reload closes it).
pub async fn serve<IO>(pools: Pools, admitted: Admitted, peer: SocketAddr, io: IO)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Admitted { pool, name } = admitted;
    let label = format!("tunnel://{name}@{peer}");
    let upstream = pool.def.name.clone();
    let (sender, conn) = match node::h2_client().handshake(io).await {
        Ok(pair) => pair,
        Err(e) => return tracing::warn!(upstream, node = label, "tunnel's HTTP/2 handshake failed: {e}"),
    };
    let url = url::Url::parse(&format!("http://{peer}/")).expect("an IP and port make a URL");
    let node = Arc::new(Node::tunnel(url, label.clone(), sender));
    pool.join(node.clone());
    tracing::info!(upstream, node = label, tunnels = pool.tunnels().len(), "node dialled in; in the pool while its tunnel lasts");
    // A reload between `admit` and `join` may have replaced the pool; a node
    // left in the old one would be connected and never asked. It dials again.
    if !pools.get(&upstream).is_ok_and(|p| Arc::ptr_eq(&p, &pool)) {
        node.close();
    }
    // A reload may move the node to a rebuilt pool: leave by name, not this one.
    drop(pool);
    let why = tokio::select! {
        ended = conn => ended.map_or_else(|e| e.to_string(), |()| "the node closed it".to_string()),
        () = node.closed() => "the pool no longer takes it (a reload changed its token)".to_string(),
    };
    pools.leave(&upstream, &node);
    tracing::info!(upstream, node = label, "tunnel closed, node out of the pool: {why}");
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::header::HeaderValue;
    use hyper::{Request, Response};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use super::*;
    use crate::config::{Secret, UpstreamDef};

    const TOKEN: &str = "a-token-of-twenty-chars";

    fn def(name: &str, token: Option<&str>) -> UpstreamDef {
        UpstreamDef {
            name: name.into(),
            nodes: Vec::new(),
            max_inflight_per_node: 4,
            health_interval: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
            tunnel_token: token.map(|t| Secret::new(t.into())),
            health_path: "/readyz".into(),
        }
    }

    fn pools() -> Pools {
        Pools::new(&[def("gpu", Some(TOKEN)), def("listed", None)])
    }

    /// A node's end in memory: an HTTP/2 server on one end of a pipe, `serve`
    /// on the other; the node's task (abort it to cut the tunnel).
    fn dial_in(pools: &Pools, name: &str, port: u16) -> tokio::task::JoinHandle<Result<(), hyper::Error>> {
        let (gateway_end, node_end) = tokio::io::duplex(64 << 10);
        let service = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"from the node")))) });
        let node_side = tokio::spawn(hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(node_end), service));
        let admitted = admit(pools, Version::HTTP_11, &ask("gpu", name, TOKEN)).unwrap();
        let peer = SocketAddr::from(([192, 0, 2, 7], port));
        tokio::spawn(serve(pools.clone(), admitted, peer, TokioIo::new(gateway_end)));
        node_side
    }

    fn ask(pool: &str, name: &str, token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static(PROTOCOL));
        h.insert(POOL_HEADER, HeaderValue::from_str(pool).unwrap());
        h.insert(NAME_HEADER, HeaderValue::from_str(name).unwrap());
        h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        h
    }

    #[tokio::test]
    async fn only_the_pools_token_lets_a_node_in() {
        let pools = pools();
        let v11 = Version::HTTP_11;
        assert_eq!(admit(&pools, v11, &ask("gpu", "gpu-1", TOKEN)).unwrap().name, "gpu-1");
        assert!(matches!(admit(&pools, v11, &ask("gpu", "gpu-1", "a-token-of-twenty-chart")), Err(UpstreamError::TunnelToken(_))));
        assert!(matches!(admit(&pools, v11, &ask("gpu", "gpu-1", "")), Err(UpstreamError::TunnelToken(_))));
        assert!(matches!(admit(&pools, v11, &ask("nope", "gpu-1", TOKEN)), Err(UpstreamError::TunnelPool(_))));
        assert!(matches!(admit(&pools, v11, &ask("listed", "gpu-1", TOKEN)), Err(UpstreamError::TunnelPool(_))), "a pool without tunnel_token_env");
        assert!(matches!(admit(&pools, v11, &ask("gpu", "gpu 1", TOKEN)), Err(UpstreamError::TunnelRequest(_))));
        assert!(matches!(admit(&pools, Version::HTTP_2, &ask("gpu", "gpu-1", TOKEN)), Err(UpstreamError::TunnelRequest(_))));
        let mut plain = ask("gpu", "gpu-1", TOKEN);
        plain.remove(UPGRADE);
        assert!(matches!(admit(&pools, v11, &plain), Err(UpstreamError::TunnelRequest(_))));
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(5), "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_node_is_in_its_pool_while_its_tunnel_lives() {
        let pools = pools();
        let node_side = dial_in(&pools, "gpu-1", 40000);
        let pool = pools.get("gpu").unwrap();
        until("the node joined", || pool.nodes().len() == 1).await;
        let node = pool.lease(None, Instant::now() + Duration::from_secs(5)).await.unwrap().node.clone();
        assert_eq!(node.label, "tunnel://gpu-1@192.0.2.7:40000");
        let req = Request::get(node.url.join("v1/x").unwrap().as_str()).body(Full::new(Bytes::new())).unwrap();
        let body = node.send(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"from the node", "the gateway's request reached the node over its own connection");
        assert_eq!(pool.status()["tunnels"], 1);
        // The node goes away: its end of the pipe is dropped.
        node_side.abort();
        until("the node left", || pool.nodes().is_empty()).await;
        assert!(matches!(pool.lease(None, Instant::now() + Duration::from_secs(1)).await, Err(UpstreamError::NoHealthyNode { .. })));
    }

    #[tokio::test]
    async fn a_reload_keeps_a_pools_tunnels_unless_its_token_changed() {
        let pools = pools();
        let _node = dial_in(&pools, "gpu-1", 40001);
        until("the node joined", || pools.get("gpu").unwrap().nodes().len() == 1).await;
        let first = pools.get("gpu").unwrap().nodes()[0].clone();
        // Unchanged: the same pool, the same node.
        pools.sync(&[def("gpu", Some(TOKEN)), def("listed", None)]);
        assert!(Arc::ptr_eq(&pools.get("gpu").unwrap().nodes()[0], &first));
        // Rebuilt with the same token: the node moves over, connection and all.
        let mut slower = def("gpu", Some(TOKEN));
        slower.max_inflight_per_node = 2;
        pools.sync(&[slower.clone()]);
        let moved = pools.get("gpu").unwrap();
        assert_eq!(moved.def.max_inflight_per_node, 2);
        assert!(Arc::ptr_eq(&moved.nodes()[0], &first), "the tunnel moved to the rebuilt pool");
        let req = Request::get(first.url.join("x").unwrap().as_str()).body(Full::new(Bytes::new())).unwrap();
        assert!(first.send(req).await.unwrap().status().is_success());
        // A new token: the tunnel is closed; the node must dial again with it.
        let mut other = slower;
        other.tunnel_token = Some(Secret::new("another-token-of-20-chars".into()));
        drop(moved);
        pools.sync(&[other]);
        assert!(pools.get("gpu").unwrap().nodes().is_empty());
        let start = Instant::now();
        loop {
            let req = Request::get(first.url.join("x").unwrap().as_str()).body(Full::new(Bytes::new())).unwrap();
            if first.send(req).await.is_err() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "the old tunnel was not closed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
