//! `[gateway]` on a node that dials out, and the tokens of tunnels on both
//! ends (`[gateway] token_env` on the node, `[upstreams.NAME]
//! tunnel_token_env` on the gateway). Tokens come from the environment, not
//! the file, so a config can be committed and shared without its secrets; a
//! missing or short one fails at load, where it stands in the file.

use std::path::Path;

use toml::Spanned;

use super::check::{base_url, plain_name, valid_name};
use super::diag::Diagnostics;
use super::raw::RawGateway;
use super::{GatewayDef, Secret};

const DEFAULT_TOKEN_ENV: &str = "OSPREY_GATEWAY_TOKEN";
/// Shorter tokens can be guessed by a client that tries many.
const MIN_TOKEN: usize = 16;

/// A name a node may go by: it ends up in a header, a metric label and the logs.
pub fn valid_node_name(name: &str) -> bool {
    plain_name(name)
}

pub(super) fn compile(g: &Spanned<RawGateway>, base: &Path, d: &mut Diagnostics<'_>) -> Option<GatewayDef> {
    let before = d.list.len();
    let raw = g.get_ref();
    let connect = gateway_url(raw.connect.get_ref())
        .map_err(|why| d.error(raw.connect.span(), format!("[gateway] connect = \"{}\" {why}", raw.connect.get_ref()), Some("the gateway's base URL, like \"https://gw.example.com\"".into())))
        .ok();
    valid_name(&raw.pool, "[gateway] pool", d);
    let default_var = Spanned::new(g.span(), DEFAULT_TOKEN_ENV.to_string());
    let token = token_from_env(raw.token_env.as_ref().unwrap_or(&default_var), "[gateway]", d);
    let name = match &raw.name {
        Some(n) => valid_name(n, "[gateway] node", d).then(|| n.get_ref().clone()),
        None => match hostname() {
            Some(h) if valid_node_name(&h) => Some(h),
            other => {
                let why = other.map_or("cannot be read".to_string(), |h| format!("\"{h}\" is not a plain name"));
                d.error(g.span(), format!("[gateway] has no name, and this machine's host name {why}"), Some("add name = \"gpu-1\" (letters, digits, '-', '_', '.')".into()));
                None
            }
        },
    };
    let ca_root = match &raw.ca_root {
        Some(c) => Some(d.existing(base, c, "[gateway] ca_root", "the PEM file of the CA that signed the gateway's certificate")?),
        None => None,
    };
    let def = GatewayDef { connect: connect?, pool: raw.pool.get_ref().clone(), name: name?, token: token?, ca_root };
    (d.list.len() == before).then_some(def)
}

/// The token in the environment variable `var`, trimmed: set, and long enough.
pub(super) fn token_from_env(var: &Spanned<String>, what: &str, d: &mut Diagnostics<'_>) -> Option<Secret> {
    let name = var.get_ref();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        d.error(var.span(), format!("{what}: \"{name}\" is not an environment variable name"), Some("like \"OSPREY_TUNNEL_TOKEN\"".into()));
        return None;
    }
    match std::env::var(name).map(|t| t.trim().to_string()) {
        Ok(token) if token.len() >= MIN_TOKEN => Some(Secret::new(token)),
        Ok(_) => {
            d.error(var.span(), format!("{what}: the token in ${name} is shorter than {MIN_TOKEN} characters"), Some("use a long random string, e.g. `openssl rand -hex 24`".into()));
            None
        }
        Err(_) => {
            let hint = format!("export {name}=<token> before starting osprey; the gateway's pool and its nodes share the token");
            d.error(var.span(), format!("{what}: environment variable {name}, which holds the tunnel token, is not set"), Some(hint));
            None
        }
    }
}

/// The gateway's base URL (the tunnel is always asked for at `/v1/tunnel`).
fn gateway_url(text: &str) -> Result<url::Url, String> {
    base_url(text, "gateway", "a gateway speaks https (or http on a network you trust)", "the token comes from the environment")
}

/// This machine's host name (Linux), the default name of a node.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok())?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse;

    fn config(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        parse(text, &Path::new(env!("CARGO_MANIFEST_DIR")).join("osprey.toml"))
    }

    /// Each test reads variables of its own: tests run as threads of one process.
    #[test]
    fn a_node_dials_its_gateway_and_a_pool_of_tunnels_needs_no_listed_nodes() {
        std::env::set_var("OSPREY_TEST_GW_TOKEN_A", "  0123456789abcdef0123  \n");
        let c = config(
            r#"
[gateway]
connect = "https://gw.example.com"
pool = "gpu"
token_env = "OSPREY_TEST_GW_TOKEN_A"
name = "gpu-1"

[upstreams.gpu]
tunnel_token_env = "OSPREY_TEST_GW_TOKEN_A"
"#,
        )
        .unwrap();
        let g = c.gateway.unwrap();
        assert_eq!((g.connect.as_str(), g.pool.as_str(), g.name.as_str(), g.token.expose()), ("https://gw.example.com/", "gpu", "gpu-1", "0123456789abcdef0123"));
        assert!(!format!("{g:?}").contains("0123456789"), "the token never shows in Debug");
        assert!(c.upstreams[0].nodes.is_empty());
        assert_eq!(c.upstreams[0].tunnel_token.as_ref().map(|t| t.expose()), Some("0123456789abcdef0123"));
        let c = config("[gateway]\nconnect = \"http://127.0.0.1:9000\"\npool = \"gpu\"\ntoken_env = \"OSPREY_TEST_GW_TOKEN_A\"\n").unwrap();
        assert!(!c.gateway.unwrap().name.is_empty(), "the host name names a node by default");
    }

    #[test]
    fn gateway_mistakes_are_reported_where_they_stand() {
        std::env::set_var("OSPREY_TEST_GW_SHORT", "short");
        std::env::remove_var("OSPREY_TEST_GW_UNSET");
        let err = config(
            r#"
[gateway]
connect = "ftp://gw.example.com/tunnel"
pool = "g p u"
token_env = "OSPREY_TEST_GW_SHORT"

[upstreams.a]
tunnel_token_env = "OSPREY_TEST_GW_UNSET"

[upstreams.b]
nodes = []
"#,
        )
        .unwrap_err();
        let found: Vec<(usize, usize, String)> = err.diagnostics().iter().map(|d| (d.line, d.column, d.message.clone())).collect();
        let at = |line: usize, needle: &str| found.iter().any(|(l, _, m)| *l == line && m.contains(needle));
        assert!(at(3, "has scheme 'ftp'"), "{found:?}");
        assert!(at(4, "[gateway] pool name \"g p u\""), "{found:?}");
        assert!(at(5, "shorter than 16"), "{found:?}");
        assert!(at(8, "OSPREY_TEST_GW_UNSET, which holds the tunnel token, is not set"), "{found:?}");
        assert!(at(11, "lists no nodes and takes no tunnels"), "{found:?}");
        assert_eq!(found[0].1, 11, "column of the value: {found:?}");
    }
}
