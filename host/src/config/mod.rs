//! Configuration in two phases: `raw` (serde structs as written, unknown keys
//! refused) then `compile` (validation into the types below). Errors carry
//! file, line, column and a hint (`diag`), all of them at once.

mod check;
mod compile;
pub mod diag;
mod gateway;
pub mod raw;
pub mod tls;
mod streams;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diag::{ConfigError, Diagnostic};
pub use gateway::valid_node_name;
pub use streams::{GateThresholds, StreamSettings, DEFAULT_GATE};
pub use tls::{AcmeSettings, CertFiles, Challenge, Directory, TlsMode, TlsSettings};

use crate::nn::{ElemType, LoadSpec, PoolSettings};

/// A validated configuration. Paths are resolved against the config file's folder.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub models: Vec<ModelDef>,
    pub plugins: Vec<PluginDef>,
    pub routes: Vec<RouteDef>,
    pub admin: AdminSettings,
    /// Bytes the in-memory result cache may hold.
    pub cache_bytes: u64,
    /// When set, the cache and the token buckets live in Redis (local while it is down).
    pub redis: Option<crate::redis::Settings>,
    /// HTTPS on `server.listen` (and an optional plain redirect listener), or off.
    pub tls: TlsSettings,
    pub video: VideoSettings,
    /// Live streams; `None` when the config has no `[streams]` (they are off).
    pub streams: Option<StreamSettings>,
    /// Pools of nodes that routes may forward to.
    pub upstreams: Vec<UpstreamDef>,
    /// A gateway this node dials out to (`[gateway]`); read at start only.
    pub gateway: Option<GatewayDef>,
}

/// `[gateway]`: this node opens one connection to a gateway's pool and
/// serves it HTTP/2 over that connection (a node behind NAT).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayDef {
    /// `http://` or `https://` and a host, no path.
    pub connect: url::Url,
    pub pool: String,
    /// How the gateway names this node (checked by `valid_node_name`).
    pub name: String,
    /// The pool's token, from the environment variable `token_env` names.
    pub token: Secret,
    /// An extra CA root trusted for the gateway's certificate.
    pub ca_root: Option<PathBuf>,
}

/// A token from the environment: compared and sent, never printed (its
/// `Debug` is redacted, so a logged config does not leak it).
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether a client's `given` token is this one (see `same_secret`).
    pub fn matches(&self, given: &str) -> bool {
        same_secret(given, &self.0)
    }
}

/// Compares two tokens' SHA-256 digests in constant time: the time taken
/// shows neither where the first difference lies nor how long the token is.
pub fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(given.as_bytes()).as_slice().ct_eq(Sha256::digest(expected.as_bytes()).as_slice()).into()
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `[upstreams.NAME]`: osprey nodes that serve the same routes; a gateway's
/// route with `upstream = NAME` forwards each upload to one of them, and a
/// model with `remote = { upstream = NAME, ... }` sends them its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDef {
    pub name: String,
    /// Base URLs (`http://host:port` or `https://host:port`), validated.
    pub nodes: Vec<url::Url>,
    pub max_inflight_per_node: usize,
    pub health_interval: Duration,
    pub connect_timeout: Duration,
    /// Nodes that present this token may dial in and join the pool while
    /// connected (`tunnel_token_env`); `None`: the pool takes no tunnels.
    pub tunnel_token: Option<Secret>,
    /// What health checks ask each node: `/readyz`, or `/v2/health/ready`
    /// for servers of the Open Inference Protocol.
    pub health_path: String,
}

/// Bounds of the video jobs: what one upload may be and how many run at once.
#[derive(Debug, Clone)]
pub struct VideoSettings {
    pub max_bytes: u64,
    pub max_duration: Duration,
    pub max_frames: usize,
    pub max_jobs: usize,
    pub max_fps: u32,
    /// A job that nobody follows for this long is cancelled.
    pub idle_cancel: Duration,
}

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            max_bytes: 200_000_000,
            max_duration: Duration::from_secs(120),
            max_frames: 3600,
            max_jobs: 2,
            max_fps: 30,
            idle_cancel: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Bearer token of `/admin/*`; `None` turns the admin API off.
    pub token: Option<String>,
    pub watch: bool,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub deadline: Duration,
    pub max_body_bytes: usize,
    pub plugin_memory_bytes: usize,
    pub max_plugin_instances: u32,
    pub api_key_header: Option<String>,
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// One address's share of `max_connections`: a single client (a flood
    /// of idle connections) cannot lock everyone else out.
    pub max_connections_per_ip: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_streams: u32,
    /// How slowly a request body may arrive before it is cut off (408).
    pub body_pace: BodyPace,
    /// Chains running at once: bounds the decoded images and tensors held in
    /// memory under load; the cores are busy long before this many.
    pub max_inflight: usize,
    /// Requests waiting for a turn; past this, overload is answered 429
    /// rather than left to time out.
    pub max_waiting: usize,
    pub shutdown_grace: Duration,
    /// ONNX Runtime's shared thread pool and the limit on model runs at once.
    pub pool: PoolSettings,
    /// Where compiled plugins are kept between starts.
    pub compiled_cache: CompiledCache,
}

/// The time a request body may take, the rule of Apache's `mod_reqtimeout`:
/// `timeout`, plus a second for every `min_rate` bytes received. A client
/// sending at `min_rate` or faster is never cut off, whatever the size; one
/// that trickles a byte a second (slowloris on the body) is, after `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    pub timeout: Duration,
    /// Bytes a second.
    pub min_rate: u32,
}

/// `[server] compiled_cache`: a folder of compiled plugins, so a start or
/// reload of an unchanged plugin skips compiling it.
#[derive(Debug, Clone, PartialEq)]
pub enum CompiledCache {
    /// Unset: `$OSPREY_CACHE/compiled`, else `$XDG_CACHE_HOME/osprey/compiled`,
    /// else `~/.cache/osprey/compiled`.
    Default,
    /// `compiled_cache = ""`: compile every plugin at every start.
    Off,
    At(PathBuf),
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            deadline: Duration::from_secs(10),
            max_body_bytes: 20 << 20,
            plugin_memory_bytes: 256 << 20,
            max_plugin_instances: 256,
            api_key_header: None,
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_streams: 100,
            body_pace: BodyPace { timeout: Duration::from_secs(10), min_rate: 16 << 10 },
            max_inflight: 2 * std::thread::available_parallelism().map_or(1, |n| n.get()).max(2),
            max_waiting: 64,
            shutdown_grace: Duration::from_secs(30),
            pool: PoolSettings::default(),
            compiled_cache: CompiledCache::Default,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelDef {
    pub name: String,
    pub source: ModelSource,
    /// Labels of every version; a version folder's own `labels.txt` wins.
    pub labels: Option<PathBuf>,
    /// The input the model declares in the config, checked against the file at load.
    pub input: Option<InputSpec>,
    pub load: LoadSpec,
}

/// Where a model's versions come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A single file, served as version "1".
    File(PathBuf),
    /// A folder whose subfolders `1/`, `2/`, ... each hold a `model.onnx`;
    /// the highest number is what an unpinned `model = "name"` gets.
    Versions(PathBuf),
    /// Another server runs it (Open Inference Protocol v2), through a pool of `[upstreams]`.
    Remote(crate::nn::RemoteSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub nchw: bool,
    pub width: u32,
    pub height: u32,
    pub ty: ElemType,
}

#[derive(Debug, Clone)]
pub struct PluginDef {
    pub name: String,
    pub file: PathBuf,
    pub policy: PluginPolicy,
}

/// What one plugin may do, within what the server allows every plugin
/// (`[plugins.NAME] models, memory_mib, deadline_ms`): an operator running a
/// third party's plugin narrows it to the models and budget it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginPolicy {
    /// Models it may load by name; `None`: every model of the config.
    pub models: Option<Vec<String>>,
    /// Its linear memory cap; `None`: `[server] plugin_memory_mib`.
    pub memory_bytes: Option<usize>,
    /// The longest one call of it may take; `None`: the route's deadline only.
    pub deadline: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct RouteDef {
    pub method: String,
    pub path: String,
    pub deadline: Duration,
    pub max_body_bytes: usize,
    pub stages: Vec<StageDef>,
    pub params: Vec<ParamDef>,
    /// How long successful answers are cached; `None` when caching is off.
    pub cache_ttl: Option<Duration>,
    pub rate_limit: Option<crate::ratelimit::Limit>,
    /// Multipart field name → path of the route whose chain runs on it.
    pub branches: Vec<(String, String)>,
    /// The stage that draws answers on the image, when the route offers it.
    pub render: Option<StageDef>,
    /// Forward to this pool of `upstreams` instead of running stages (which
    /// are then empty, as are params, branches and render).
    pub upstream: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StageDef {
    pub plugin: String,
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Where the stage is written and which it is (`FILE:LINE:COL: route
    /// POST /v1/detect: stage 2`): what a refusal of its settings by the
    /// plugin itself, at load, is reported with.
    pub at: String,
}

/// A query parameter that overrides one numeric setting of one stage, within bounds.
#[derive(Debug, Clone)]
pub struct ParamDef {
    pub name: String,
    /// Index of the stage in the route.
    pub stage: usize,
    pub min: f64,
    pub max: f64,
    /// The setting is a whole number (`top = 5`), so overrides must be too.
    pub integer: bool,
    /// Requests without it are refused (its setting is only a type example).
    pub required: bool,
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.to_path_buf(), why: e.to_string() })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut d = diag::Diagnostics::new(text, path);
    let invalid = |mut d: diag::Diagnostics<'_>| {
        d.list.sort_by_key(|x| (x.line, x.column));
        ConfigError::Invalid { path: path.to_path_buf(), diagnostics: d.list }
    };
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let hint = e.message().contains("unknown field").then(|| "check the spelling; README.md lists every key".to_string());
            d.error(e.span().unwrap_or(0..0), e.message().trim(), hint);
            return Err(invalid(d));
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    compile::compile(raw, base, &mut d).ok_or_else(|| invalid(d))
}
