//! The config file as written: serde structs that mirror the TOML, with spans
//! kept where validation needs to point at a value. No checks beyond types
//! here; `compile` validates.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub models: BTreeMap<Spanned<String>, RawModel>,
    #[serde(default)]
    pub plugins: BTreeMap<Spanned<String>, RawPlugin>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub cache: RawCache,
    pub redis: Option<RawRedis>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub video: RawVideo,
    /// Live streams (`POST /v1/streams`); off unless the section is there.
    pub streams: Option<Spanned<RawStreams>>,
    /// Pools of osprey nodes that routes with `upstream = "NAME"` forward to.
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, RawUpstream>,
    /// A gateway this node dials out to, serving its pool over the connection it opened.
    pub gateway: Option<Spanned<RawGateway>>,
}

/// `[gateway]`: a node behind NAT opens one connection to a gateway and
/// serves HTTP/2 over it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// The gateway's base URL: `https://gw.example.com` (`http://` on a network you trust).
    pub connect: Spanned<String>,
    /// The gateway's pool (`[upstreams.NAME]` there) this node joins.
    pub pool: Spanned<String>,
    /// The environment variable holding the pool's token (default `OSPREY_GATEWAY_TOKEN`).
    pub token_env: Option<Spanned<String>>,
    /// How the gateway names this node (default: the host name).
    pub name: Option<Spanned<String>>,
    /// An extra CA root (PEM) trusted for the gateway's certificate (a private or test CA).
    pub ca_root: Option<Spanned<String>>,
}

/// `[upstreams.NAME]`: a pool of osprey nodes serving the same routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URLs of the nodes: `http://10.0.0.2:8080` (h2c) or `https://...` (h2 over TLS).
    /// May be empty (or left out) when nodes dial in (`tunnel_token_env`).
    pub nodes: Option<Spanned<Vec<Spanned<String>>>>,
    /// The environment variable holding the token that nodes dialling in
    /// (`[gateway]` on the node) must present; unset, none may dial in.
    pub tunnel_token_env: Option<Spanned<String>>,
    /// Requests one node runs at once; more wait for a free node.
    pub max_inflight_per_node: Option<Spanned<u32>>,
    /// How often each node's `/readyz` is asked, in milliseconds.
    pub health_interval_ms: Option<Spanned<u64>>,
    /// How long a connection to a node (and a health check) may take, in milliseconds.
    pub connect_timeout_ms: Option<Spanned<u64>>,
    /// The path health checks ask (default `/readyz`; `/v2/health/ready` for
    /// Triton, KServe and other Open Inference Protocol servers).
    pub health_path: Option<Spanned<String>>,
}

/// `[video]`: bounds of the video jobs (`POST /v1/videos`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVideo {
    /// Largest upload, in bytes.
    pub max_bytes: Option<Spanned<u64>>,
    /// Longest video, in seconds.
    pub max_seconds: Option<Spanned<u64>>,
    /// Most frames one job runs through its route.
    pub max_frames: Option<Spanned<u32>>,
    /// Jobs running at once; more are answered 429.
    pub max_jobs: Option<Spanned<u32>>,
    /// Frames are sampled at the video's rate, at most this many a second.
    pub max_fps: Option<Spanned<u32>>,
    /// A job nobody follows for this long is cancelled, in seconds.
    pub idle_cancel_s: Option<Spanned<u64>>,
}

/// `[streams]`: live streams pushed to (RTMP) or pulled by osprey.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStreams {
    /// Streams running at once; more are answered 429.
    pub max_streams: Option<Spanned<u32>>,
    /// Frames are scaled down to fit this box and sampled at most this often.
    pub max_width: Option<Spanned<u32>>,
    pub max_height: Option<Spanned<u32>>,
    pub max_fps: Option<Spanned<u32>>,
    /// Ports osprey may open RTMP listeners on for pushed streams: `[first, last]`.
    pub ports: Option<Spanned<Vec<u16>>>,
    /// Hosts a pulled stream's URL may name (exact names or IPs); empty: no pulls.
    pub allow: Option<Vec<Spanned<String>>>,
    /// A frame older than this when its turn comes is dropped, in milliseconds.
    pub lag_ms: Option<Spanned<u64>>,
    /// No frame for this long restarts the ingest, in milliseconds.
    pub stall_ms: Option<Spanned<u64>>,
    /// Share of one core the route's chain may use per stream (0.05 to 2.0).
    pub cpu: Option<Spanned<f64>>,
    /// The similar-frame gate's default thresholds, in luma levels (0-255):
    /// the mean difference of the cells and the largest one cell may show.
    pub gate_mean: Option<Spanned<f64>>,
    pub gate_cell: Option<Spanned<f64>>,
    /// The route that marks frames with a viewer's bits (default `/v1/stego/embed/jpeg`).
    pub watermark_route: Option<Spanned<String>>,
    /// Bits of a viewer ID (1 to 16): a clip needs about this many seconds to be traced.
    pub viewer_id_bits: Option<Spanned<u32>>,
    /// The SQLite file of the viewers' audit log (relative to the config file).
    pub audit: Option<Spanned<String>>,
    /// Audit rows older than this are deleted, in days.
    pub audit_days: Option<Spanned<u64>>,
    /// The host name put in publish URLs (default: the listen address's IP).
    pub public_host: Option<Spanned<String>>,
}

/// The in-memory result cache (with `[redis]`, where answers go while Redis is down).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_bytes: Option<Spanned<u64>>,
    /// Default time to live of a cached answer, in seconds; routes may override.
    pub ttl_s: Option<Spanned<u64>>,
}

/// Redis shared by several hosts: holds the result cache and the token buckets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Spanned<String>,
    /// The longest one Redis call may take (connecting included), in milliseconds.
    pub timeout_ms: Option<Spanned<u64>>,
    /// While Redis is down, how often it is asked again, in milliseconds.
    pub recheck_ms: Option<Spanned<u64>>,
}

/// The admin API; off unless a token is set here or in `OSPREY_ADMIN_TOKEN`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token: Option<Spanned<String>>,
    /// Watch config, plugin and model files and reload on change (default true).
    pub watch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Spanned<String>>,
    /// Default deadline of a route, in milliseconds.
    pub deadline_ms: Option<Spanned<u64>>,
    /// Default largest request body, in bytes.
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Linear memory one plugin instance may use, in MiB.
    pub plugin_memory_mib: Option<Spanned<u32>>,
    /// Plugin instances alive at once (all requests together).
    pub max_plugin_instances: Option<Spanned<u32>>,
    /// Clients are told apart by this header when they send it, else by IP.
    pub api_key_header: Option<Spanned<String>>,
    /// Time a client has to send a request's headers (also the keep-alive idle limit).
    pub header_timeout_ms: Option<Spanned<u64>>,
    /// Connections served at once; past it a new connection is closed at once.
    pub max_connections: Option<Spanned<u32>>,
    /// Connections from one client address at once; past it, closed at once.
    pub max_connections_per_ip: Option<Spanned<u32>>,
    /// HTTP/2 streams (requests) one connection may have open at once.
    pub max_streams: Option<Spanned<u32>>,
    /// Time a client has to send a request body, in milliseconds, extended
    /// by a second for every `body_min_rate` bytes it sends.
    pub body_timeout_ms: Option<Spanned<u64>>,
    /// The slowest upload that is never cut off, in bytes a second.
    pub body_min_rate: Option<Spanned<u32>>,
    /// Requests running their chains at once; more wait (without a thread) for a turn.
    pub max_inflight: Option<Spanned<u32>>,
    /// Requests that may wait for a turn; more are answered 429 at once.
    pub max_waiting: Option<Spanned<u32>>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub shutdown_grace_ms: Option<Spanned<u64>>,
    /// Threads of ONNX Runtime's shared intra-op pool (default: the cores).
    pub inference_threads: Option<Spanned<u32>>,
    /// Model runs under way at once, all models together (default: the cores).
    pub max_model_runs: Option<Spanned<u32>>,
    /// Folder of compiled plugins kept between starts; "" turns it off.
    pub compiled_cache: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// One model file (version "1")...
    pub file: Option<Spanned<String>>,
    /// ...or a folder of versions: `<dir>/<N>/model.onnx`, N a whole number...
    pub versions: Option<Spanned<String>>,
    /// ...or a model another server runs, reached through an upstream pool.
    pub remote: Option<Spanned<RawRemote>>,
    pub labels: Option<Spanned<String>>,
    pub input: Option<Spanned<RawInput>>,
    pub target: Option<Spanned<String>>,
    /// Sessions: runs of this model at once, each with its own copy of the weights.
    pub instances: Option<Spanned<u32>>,
    /// Threads of a pool of the model's own per session; unset, one thread a
    /// session and every core (a session on the shared pool) for a run alone.
    pub threads: Option<Spanned<u32>>,
    /// Dynamic batching: most requests per run (1 = off).
    pub max_batch: Option<Spanned<u32>>,
    /// How long the first request of a batch waits for more, in microseconds.
    pub max_queue_delay_us: Option<Spanned<u64>>,
    /// Requests that may wait for this model; more are answered 429.
    pub queue_size: Option<Spanned<u32>>,
}

/// `remote = { upstream = "triton", model = "yolov8n", version = "1" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    pub upstream: Spanned<String>,
    pub model: Spanned<String>,
    pub version: Option<Spanned<String>>,
}

/// What the model takes, checked against the file when it loads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    pub layout: String,
    pub width: u32,
    pub height: u32,
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    pub file: Spanned<String>,
    /// The models it may load by name; unset: every model of the config.
    pub models: Option<Vec<Spanned<String>>>,
    /// Its own linear memory cap, at most `[server] plugin_memory_mib`.
    pub memory_mib: Option<Spanned<u32>>,
    /// The longest one call of it may take, within the route's deadline.
    pub deadline_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: Spanned<String>,
    #[serde(default = "post")]
    pub method: Spanned<String>,
    pub deadline_ms: Option<Spanned<u64>>,
    pub max_body_bytes: Option<Spanned<u64>>,
    /// The chain that answers here; or, instead, `upstream`.
    pub stages: Option<Spanned<Vec<RawStage>>>,
    /// A pool of `[upstreams]` whose nodes answer this route on the same path.
    pub upstream: Option<Spanned<String>>,
    #[serde(default)]
    pub params: BTreeMap<Spanned<String>, Spanned<RawParam>>,
    /// Seconds a successful answer stays cached; 0 turns caching off here.
    pub cache_ttl_s: Option<Spanned<u64>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    /// Named parts of a multipart upload, each run through another route's
    /// chain first: `branches = { visible = "/v1/detect", infrared = "/v1/detect" }`.
    pub branches: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    /// The stage that draws the answer on the image, run last when a client
    /// asks for `image/jpeg` or `image/png`.
    pub render: Option<RawStage>,
}

/// A token bucket per client: `rate` requests a second, bursts of `burst`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub rate: f64,
    pub burst: u32,
}

fn post() -> Spanned<String> {
    Spanned::new(0..0, "POST".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub plugin: Spanned<String>,
    #[serde(default = "no_settings")]
    pub settings: Spanned<toml::Table>,
}

fn no_settings() -> Spanned<toml::Table> {
    Spanned::new(0..0, toml::Table::new())
}

/// A query parameter that overrides the setting of the same name of one stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    pub stage: String,
    pub min: f64,
    pub max: f64,
    /// Every request must give it (`?id=` of the watermark embedder).
    #[serde(default)]
    pub required: bool,
}

/// `[tls]`: how the listener gets its certificate. Which keys belong to which
/// mode is checked in `compile`, so a stray key is reported where it stands.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub mode: Option<Spanned<RawTlsMode>>,
    pub domains: Option<Spanned<Vec<Spanned<String>>>>,
    pub contact: Option<Spanned<Vec<Spanned<String>>>>,
    pub cache_dir: Option<Spanned<String>>,
    /// "letsencrypt", "letsencrypt-staging" or an https:// directory URL.
    pub directory: Option<Spanned<String>>,
    pub challenge: Option<Spanned<RawChallenge>>,
    /// An extra CA root (PEM) trusted when talking to the directory (a test CA).
    pub ca_root: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    /// A plain HTTP listener: redirects to HTTPS, answers HTTP-01 challenges.
    pub http_listen: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawTlsMode {
    Acme,
    Files,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RawChallenge {
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    #[serde(rename = "http-01")]
    Http01,
}
