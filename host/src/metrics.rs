//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text). One
//! registry per process, like Prometheus' own default registry: every layer
//! records into it without threading a handle through each call.

use std::sync::OnceLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadOutcome {
    success,
    rolled_back,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CacheResult {
    hit,
    miss,
}

/// What fell back to local state while Redis was down.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Local {
    cache,
    ratelimit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocalLabel {
    pub used: Local,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UrlLabel {
    pub url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: ReloadOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelVersionLabels {
    pub model: String,
    pub version: String,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub route: String,
    pub result: CacheResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub upstream: String,
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeStatusLabels {
    pub upstream: String,
    pub node: String,
    /// The node's status code, or `error` (no answer) or `timeout`.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeDirLabels {
    pub upstream: String,
    pub node: String,
    /// `sent` (request bodies) or `received` (answer bodies).
    pub dir: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelRunLabels {
    pub model: String,
    /// `shared_pool` (a run alone in the process, on every core) or `own`
    /// (the session's own threads: one, unless the model sets `threads`).
    pub threads: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelStatusLabels {
    pub model: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamFrameLabels {
    pub stream: String,
    /// `in` (read from the ingest), `out` (written to the output),
    /// `filled` (the last frame again while the input stalls), `skipped`
    /// (the gate reused the last result), `dropped` (older than the lag budget,
    /// or replaced by a newer one before its turn), `busy` (the server or the
    /// stream's CPU budget had no room: the last result reused).
    pub frames: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 8))
}

/// Every metric the host keeps, registered once.
pub struct Metrics {
    registry: Registry,
    pub reloads: Family<OutcomeLabel, Counter>,
    pub generation: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub total: Histograms<RouteLabel>,
    pub plugin_time: Histograms<RouteLabel>,
    pub rate_limited: Family<RouteLabel, Counter>,
    pub cache: Family<CacheLabels, Counter>,
    pub cache_bytes: Gauge,
    queue_wait: Histograms<ModelLabel>,
    inference: Histograms<ModelLabel>,
    pub model_runs: Family<ModelRunLabels, Counter>,
    batch_size: Histograms<ModelLabel>,
    queue_depth: Family<ModelLabel, Gauge>,
    pub models: Family<ModelVersionLabels, Gauge>,
    /// Unix time the served certificate expires; 0 without one.
    pub tls_cert_expiry: Gauge,
    pub tls_order_failures: Counter,
    pub tls_order_failing: Gauge,
    pub upstream_requests: Family<NodeStatusLabels, Counter>,
    pub upstream_duration: Histograms<NodeLabels>,
    pub upstream_inflight: Family<NodeLabels, Gauge>,
    pub upstream_healthy: Family<NodeLabels, Gauge>,
    /// By the URL Redis is reached at (without its password); absent without `[redis]`.
    pub redis_up: Family<UrlLabel, Gauge>,
    pub redis_local: Family<LocalLabel, Counter>,
    pub refused_by_deadline: Family<RouteLabel, Counter>,
    pub refused_late: Family<RouteLabel, Counter>,
    pub turn_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub admission_lateness: Family<RouteLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub upstream_tunnels: Family<UpstreamLabel, Gauge>,
    pub upstream_bytes: Family<NodeDirLabels, Counter>,
    pub oip_infer: Family<ModelStatusLabels, Counter>,
    pub streams: Gauge,
    pub stream_frames: Family<StreamFrameLabels, Counter>,
    pub stream_stage: Histograms<StreamLabel>,
    pub stream_lag: Family<StreamLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub audit_rows: Counter,
    pub audit_dropped: Counter,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("osprey");
        let m = Metrics {
            reloads: Family::default(),
            generation: Gauge::default(),
            requests: Family::default(),
            total: Family::new_with_constructor(seconds),
            plugin_time: Family::new_with_constructor(seconds),
            rate_limited: Family::default(),
            cache: Family::default(),
            cache_bytes: Gauge::default(),
            queue_wait: Family::new_with_constructor(seconds),
            inference: Family::new_with_constructor(seconds),
            model_runs: Family::default(),
            batch_size: Family::new_with_constructor(sizes),
            queue_depth: Family::default(),
            models: Family::default(),
            tls_cert_expiry: Gauge::default(),
            tls_order_failures: Counter::default(),
            tls_order_failing: Gauge::default(),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(seconds),
            upstream_inflight: Family::default(),
            upstream_healthy: Family::default(),
            redis_up: Family::default(),
            redis_local: Family::default(),
            refused_by_deadline: Family::default(),
            refused_late: Family::default(),
            turn_seconds: Gauge::default(),
            admission_lateness: Family::default(),
            upstream_tunnels: Family::default(),
            upstream_bytes: Family::default(),
            oip_infer: Family::default(),
            streams: Gauge::default(),
            stream_frames: Family::default(),
            stream_stage: Family::new_with_constructor(seconds),
            stream_lag: Family::default(),
            audit_rows: Counter::default(),
            audit_dropped: Counter::default(),
            registry: Registry::default(),
        };
        r.register("reload", "Reloads of config, plugins and models, by outcome", m.reloads.clone());
        r.register("snapshot_generation", "Generation of the snapshot being served (1 at start)", m.generation.clone());
        r.register("requests", "Routed requests by route and status", m.requests.clone());
        r.register("request_duration_seconds", "Time from request to answer, by route", m.total.clone());
        r.register("plugin_duration_seconds", "Time in plugins (the chain minus inference), by route", m.plugin_time.clone());
        r.register("rate_limited", "Requests refused by a token bucket, by route", m.rate_limited.clone());
        r.register("cache_lookups", "Result cache lookups, by route and result", m.cache.clone());
        r.register("cache_bytes", "Bytes held by the in-memory result cache", m.cache_bytes.clone());
        r.register("queue_wait_seconds", "Time a request waited in its model's queue", m.queue_wait.clone());
        r.register("inference_seconds", "Time of one model run (a whole batch)", m.inference.clone());
        r.register("batch_size", "Requests per model run", m.batch_size.clone());
        r.register("model_runs", "Model runs by the threads they ran on: the shared pool (alone in the process) or the session's own", m.model_runs.clone());
        r.register("queue_depth", "Requests waiting per model", m.queue_depth.clone());
        r.register("model_loaded", "1 for each model version loaded, by provider", m.models.clone());
        r.register("tls_cert_expiry_seconds", "Unix time the served TLS certificate expires (0: none yet, or TLS off)", m.tls_cert_expiry.clone());
        r.register("tls_acme_order_failures", "ACME orders that failed (the CA unreachable, refusing, or not validating)", m.tls_order_failures.clone());
        r.register(
            "tls_acme_failing_orders",
            "Failed ACME orders in a row (0 once one succeeds); while above 0 the current certificate is still served and rustls-acme retries after 2^n s",
            m.tls_order_failing.clone(),
        );
        r.register("upstream_requests", "Requests forwarded to a node of an upstream pool, by node and status", m.upstream_requests.clone());
        r.register("upstream_duration_seconds", "Time a node took to answer a forwarded request", m.upstream_duration.clone());
        r.register("upstream_in_flight", "Requests in flight to a node", m.upstream_inflight.clone());
        r.register("upstream_healthy", "1 while a node is in its pool (its health check answers), else 0", m.upstream_healthy.clone());
        r.register("redis_up", "1 while Redis answers, 0 while this host serves from its own cache and token buckets", m.redis_up.clone());
        r.register("redis_local", "Cache lookups and token-bucket checks served locally because Redis was down, by use", m.redis_local.clone());
        r.register("admission_refused", "Requests refused at once because their predicted wait and run would pass their deadline, by route", m.refused_by_deadline.clone());
        r.register("admission_late", "Requests that waited for a turn and got none in time to finish: refused (503) unstarted, by route", m.refused_late.clone());
        r.register("turn_seconds", "The mean time a turn to run a chain is held lately: what admission predicts waits from", m.turn_seconds.clone());
        r.register(
            "admission_lateness",
            "How much longer waits for a turn lately were than the holds predicted (1: as predicted), by route; admission scales its predictions by it",
            m.admission_lateness.clone(),
        );
        r.register("upstream_tunnels", "Nodes connected to a pool over tunnels they dialled", m.upstream_tunnels.clone());
        r.register("upstream_bytes", "Body bytes sent to and received from a node, by direction", m.upstream_bytes.clone());
        r.register("oip_infer_requests", "Open Inference Protocol infer requests answered, by model and status", m.oip_infer.clone());
        r.register("streams", "Live streams running", m.streams.clone());
        r.register("stream_frames", "Frames of a live stream, by what became of them", m.stream_frames.clone());
        r.register("stream_stage_seconds", "Time a live stream's frame spent in the route's chain (and marking)", m.stream_stage.clone());
        r.register("stream_lag_seconds", "Age of a live stream's last frame when it was written out", m.stream_lag.clone());
        r.register("audit_rows", "Rows committed to the viewers' audit log", m.audit_rows.clone());
        r.register("audit_dropped", "Visits not written to the audit log (the writer was behind, or failed)", m.audit_dropped.clone());
        Metrics { registry: r, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Counts one use of local state in Redis' place.
    pub fn redis_local(&self, used: Local) {
        self.redis_local.get_or_create(&LocalLabel { used }).inc();
    }

    pub fn queue_wait(&self, model: &str) -> Histogram {
        self.queue_wait.get_or_create(&ModelLabel { model: model.into() }).clone()
    }

    pub fn inference(&self, model: &str) -> Histogram {
        self.inference.get_or_create(&ModelLabel { model: model.into() }).clone()
    }

    pub fn batch_size(&self, model: &str) -> Histogram {
        self.batch_size.get_or_create(&ModelLabel { model: model.into() }).clone()
    }

    pub fn queue_depth(&self, model: &str) -> Gauge {
        self.queue_depth.get_or_create(&ModelLabel { model: model.into() }).clone()
    }
}
