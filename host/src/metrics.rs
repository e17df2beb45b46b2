//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReloadOutcome {
    #[allow(non_camel_case_types)]
    success,
    #[allow(non_camel_case_types)]
    rolled_back,
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

/// Every metric the host keeps, registered once.
pub struct Metrics {
    registry: Registry,
    pub reloads: Family<OutcomeLabel, Counter>,
    pub generation: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("osprey");
        let reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register("reload", "Reloads of config, plugins and models, by outcome", reloads.clone());
        let generation = Gauge::default();
        registry.register("snapshot_generation", "Generation of the snapshot being served (1 at start)", generation.clone());
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Routed requests by route and status", requests.clone());
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        registry.register("request_duration_seconds", "Time from request to answer, by route", latency.clone());
        Metrics { registry, reloads, generation, requests, latency }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
