//! Counters of SPEC §6, kept in one process-wide registry.
//!
//! Everything that happens to a line or a delivery is counted here: lines read, rejected (by
//! reason), deliveries by outcome, retries, delivery time, source lag. The admin endpoint encodes
//! [`Metrics::encode`] as Prometheus text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub sink: String,
    pub outcome: Outcome,
}

/// What became of an event at a sink.
#[derive(
    Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    delivered,
    filtered,
    dead_letter,
}

pub struct Metrics {
    registry: Registry,
    pub lines_read: Family<SourceLabel, Counter>,
    pub lines_rejected: Family<RejectLabels, Counter>,
    pub events_unmapped: Family<SourceLabel, Counter>,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub retries: Family<SinkLabel, Counter>,
    pub delivery_seconds: Family<SinkLabel, Histogram>,
    pub source_lag_bytes: Family<SourceLabel, Gauge>,
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flagtail");
        let lines_read = Family::default();
        let lines_rejected = Family::default();
        let events_unmapped = Family::default();
        let deliveries = Family::default();
        let retries = Family::default();
        let delivery_seconds = Family::<SinkLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let source_lag_bytes = Family::default();
        registry.register("lines_read", "Lines read from a source", lines_read.clone());
        registry.register(
            "lines_rejected",
            "Lines that are not events, by reason",
            lines_rejected.clone(),
        );
        registry.register(
            "events_unmapped",
            "Events of a kind no mapping covers",
            events_unmapped.clone(),
        );
        registry.register(
            "deliveries",
            "Events finished by a sink, by outcome",
            deliveries.clone(),
        );
        registry.register(
            "delivery_retries",
            "Attempts after the first",
            retries.clone(),
        );
        registry.register(
            "delivery_seconds",
            "Time from first attempt to outcome",
            delivery_seconds.clone(),
        );
        registry.register(
            "source_lag_bytes",
            "File size minus checkpoint",
            source_lag_bytes.clone(),
        );
        Metrics {
            registry,
            lines_read,
            lines_rejected,
            events_unmapped,
            deliveries,
            retries,
            delivery_seconds,
            source_lag_bytes,
        }
    }

    pub fn delivered(&self, sink: &str, outcome: Outcome, n: u64) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                sink: sink.to_string(),
                outcome,
            })
            .inc_by(n);
    }

    pub fn rejected(&self, source: &str, reason: &str) {
        self.lines_rejected
            .get_or_create(&RejectLabels {
                source: source.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
