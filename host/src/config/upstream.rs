//! `[upstreams.NAME]`: pools of osprey nodes a gateway forwards routes to.
//! Every node URL is checked here, so a typo fails at load with its line and
//! column rather than as a refused connection under traffic. A pool with
//! `tunnel_token_env` also takes nodes that dial in (`upstream::tunnel`).

use std::time::Duration;

use toml::Spanned;

use super::check::{base_url, positive_ms, ranged, valid_name};
use super::diag::Diagnostics;
use super::raw::{RawConfig, RawUpstream};
use super::UpstreamDef;

const DEFAULT_INFLIGHT: usize = 16;
const DEFAULT_HEALTH: Duration = Duration::from_secs(1);
const DEFAULT_CONNECT: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_PATH: &str = "/readyz";

pub fn compile(raw: &RawConfig, d: &mut Diagnostics<'_>) -> Vec<UpstreamDef> {
    raw.upstreams.iter().filter_map(|(name, u)| one(name, u, d)).collect()
}

fn one(name: &Spanned<String>, u: &RawUpstream, d: &mut Diagnostics<'_>) -> Option<UpstreamDef> {
    let before = d.list.len();
    let what = format!("[upstreams.{}]", name.get_ref());
    if !valid_name(name, "upstream", d) {
        return None;
    }
    let listed: &[Spanned<String>] = u.nodes.as_ref().map_or(&[], |n| n.get_ref());
    if listed.is_empty() && u.tunnel_token_env.is_none() {
        let span = u.nodes.as_ref().map_or(name.span(), |n| n.span());
        let hint = "nodes = [\"http://10.0.0.2:8080\"], or tunnel_token_env = \"OSPREY_TUNNEL_TOKEN\" for nodes that dial in";
        d.error(span, format!("{what} lists no nodes and takes no tunnels"), Some(hint.into()));
    }
    let tunnel_token = u.tunnel_token_env.as_ref().map(|var| super::gateway::token_from_env(var, &format!("{what} tunnel_token_env"), d));
    let mut nodes = Vec::new();
    for n in listed {
        match node_url(n.get_ref()) {
            Ok(url) if nodes.contains(&url) => d.error(n.span(), format!("{what}: node {url} is listed twice"), None),
            Ok(url) => nodes.push(url),
            Err(why) => d.error(n.span(), format!("{what}: node \"{}\" {why}", n.get_ref()), Some("a base URL like \"http://10.0.0.2:8080\" or \"https://node1.example.com\"".into())),
        }
    }
    let inflight = u.max_inflight_per_node.as_ref().map_or(Some(DEFAULT_INFLIGHT as u32), |v| ranged(v, &format!("{what} max_inflight_per_node"), 100_000, d));
    let health = u.health_interval_ms.as_ref().map_or(Some(DEFAULT_HEALTH), |v| positive_ms(v, &format!("{what} health_interval_ms"), d));
    let connect = u.connect_timeout_ms.as_ref().map_or(Some(DEFAULT_CONNECT), |v| positive_ms(v, &format!("{what} connect_timeout_ms"), d));
    let health_path = match &u.health_path {
        None => Some(DEFAULT_HEALTH_PATH.to_string()),
        Some(p) => health_path(p.get_ref()).map_err(|why| d.error(p.span(), format!("{what} health_path \"{}\" {why}", p.get_ref()), Some("like \"/readyz\" (osprey) or \"/v2/health/ready\" (Triton, KServe)".into()))).ok(),
    };
    let def = UpstreamDef {
        name: name.get_ref().clone(),
        nodes,
        max_inflight_per_node: inflight? as usize,
        health_interval: health?,
        connect_timeout: connect?,
        // A token that failed its check left a diagnostic: the pool is not made.
        tunnel_token: tunnel_token.flatten(),
        health_path: health_path?,
    };
    (d.list.len() == before).then_some(def)
}

/// A path on the node: absolute, no query, nothing a URL would escape.
fn health_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') || p.starts_with("//") {
        return Err("does not start with a single '/'".into());
    }
    if p.contains(['?', '#', ' ']) {
        return Err("has a query, fragment or space".into());
    }
    Ok(p.to_string())
}

/// A node's base URL (a route forwards to the same path on the node).
fn node_url(text: &str) -> Result<url::Url, String> {
    base_url(text, "node", "nodes speak http (h2c) or https", "nodes are reached without them")
}

#[cfg(test)]
mod tests {
    use super::{health_path, node_url};

    #[test]
    fn health_paths_are_absolute_paths() {
        assert_eq!(health_path("/v2/health/ready").unwrap(), "/v2/health/ready");
        assert!(health_path("v2/health/ready").is_err());
        assert!(health_path("//evil.example/x").is_err());
        assert!(health_path("/readyz?x=1").is_err());
    }

    #[test]
    fn node_urls_are_plain_base_urls() {
        assert_eq!(node_url("http://10.0.0.2:8080").unwrap().port(), Some(8080));
        assert!(node_url("https://node.example.com/").is_ok());
        assert!(node_url("ftp://x:1").unwrap_err().contains("scheme"));
        assert!(node_url("http://x:1/v1/detect").unwrap_err().contains("path"));
        assert!(node_url("http://u:p@x:1").unwrap_err().contains("credentials"));
        assert!(node_url("10.0.0.2:8080").is_err());
    }
}
