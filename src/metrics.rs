//! Counters of SPEC §6, kept in one process-wide registry.
//!
//! Everything that happens to a line or a delivery is counted here: lines read, rejected (by
//! reason), deliveries by outcome, retries, delivery time, source lag. The admin endpoint serves
//! [`Metrics::encode`] in the [`Format`] the scraper asks for: Prometheus text 0.0.4 by default,
//! OpenMetrics 1.0.0 when asked.

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
pub struct VersionLabel {
    pub version: String,
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

/// One sink's counters.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    pub delivered: Counter,
    pub filtered: Counter,
    pub dead_letter: Counter,
    pub retries: Counter,
    pub seconds: Histogram,
    /// Its last failure and running backoff, for the status page.
    pub state: std::sync::Arc<crate::status::SinkState>,
}

pub struct Metrics {
    registry: Registry,
    pub lines_read: Family<SourceLabel, Counter>,
    pub lines_rejected: Family<RejectLabels, Counter>,
    pub events_unmapped: Family<SourceLabel, Counter>,
    /// Records dropped from a rejected file to keep it under `rejected.max_bytes`.
    pub rejected_dropped: Family<SourceLabel, Counter>,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub retries: Family<SinkLabel, Counter>,
    pub delivery_seconds: Family<SinkLabel, Histogram>,
    pub source_lag_bytes: Family<SourceLabel, Gauge>,
    /// Letters waiting in a sink's dead-letter file; set when scraped.
    pub dead_letters: Family<SinkLabel, Gauge>,
    /// Bytes a socket or HTTP source's journal holds; set when scraped.
    pub journal_bytes: Family<SourceLabel, Gauge>,
    /// Per sink, set when scraped: 1 while it is up, 0 while retrying or down; and what waits in
    /// its backlog.
    pub sink_up: Family<SinkLabel, Gauge>,
    pub sink_backlog_events: Family<SinkLabel, Gauge>,
    pub sink_backlog_bytes: Family<SinkLabel, Gauge>,
    /// Per sink: times bytes of its backlog could not be read (a segment deleted or damaged).
    pub sink_backlog_lost: Family<SinkLabel, Counter>,
    /// Per sink: writes of its attempt log that failed (their attempts are not on record).
    pub attempt_log_errors: Family<SinkLabel, Counter>,
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flagtail");
        let r = &mut registry;
        register_build_info(r);
        let delivery_seconds = Family::<SinkLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        r.register(
            "delivery_seconds",
            "Time from first attempt to outcome",
            delivery_seconds.clone(),
        );
        Metrics {
            journal_bytes: registered(
                r,
                "journal_bytes",
                "Bytes a socket or HTTP source's journal holds",
            ),
            dead_letters: registered(
                r,
                "dead_letters",
                "Letters waiting in a sink's dead-letter file",
            ),
            lines_read: registered(r, "lines_read", "Lines read from a source"),
            lines_rejected: registered(r, "lines_rejected", "Lines that are not events, by reason"),
            events_unmapped: registered(r, "events_unmapped", "Events of a kind no mapping covers"),
            rejected_dropped: registered(
                r,
                "rejected_dropped",
                "Records dropped from a rejected file to keep it under rejected.max_bytes",
            ),
            deliveries: registered(r, "deliveries", "Events finished by a sink, by outcome"),
            retries: registered(r, "delivery_retries", "Attempts after the first"),
            delivery_seconds,
            source_lag_bytes: registered(
                r,
                "source_lag_bytes",
                "Bytes not delivered yet: file size (or journal end) minus checkpoint",
            ),
            sink_up: registered(
                r,
                "sink_up",
                "1 while the sink delivers; 0 while its attempts fail (retrying or down)",
            ),
            sink_backlog_events: registered(
                r,
                "sink_backlog_events",
                "Events waiting in the sink's backlog on disk",
            ),
            sink_backlog_bytes: registered(
                r,
                "sink_backlog_bytes",
                "Bytes the sink's backlog on disk holds",
            ),
            sink_backlog_lost: registered(
                r,
                "sink_backlog_lost",
                "Times bytes of the sink's backlog could not be read back (deleted or damaged)",
            ),
            attempt_log_errors: registered(
                r,
                "attempt_log_errors",
                "Writes of the sink's attempt log that failed (those attempts are not on record)",
            ),
            registry,
        }
    }

    /// The handles one sink updates, looked up once.
    pub fn sink(&self, sink: &str) -> SinkMetrics {
        let outcome = |outcome| {
            let labels = OutcomeLabels {
                sink: sink.to_string(),
                outcome,
            };
            self.deliveries.get_or_create(&labels).clone()
        };
        let label = SinkLabel {
            sink: sink.to_string(),
        };
        SinkMetrics {
            delivered: outcome(Outcome::delivered),
            filtered: outcome(Outcome::filtered),
            dead_letter: outcome(Outcome::dead_letter),
            retries: self.retries.get_or_create(&label).clone(),
            seconds: self.delivery_seconds.get_or_create(&label).clone(),
            state: crate::status::sink(sink),
        }
    }

    /// Counts a gap in `sink`'s backlog.
    pub fn backlog_lost(&self, sink: &str) {
        let label = SinkLabel {
            sink: sink.to_string(),
        };
        self.sink_backlog_lost.get_or_create(&label).inc();
    }

    /// Counts a failed write of `sink`'s attempt log.
    pub fn attempt_log_error(&self, sink: &str) {
        let label = SinkLabel {
            sink: sink.to_string(),
        };
        self.attempt_log_errors.get_or_create(&label).inc();
    }

    /// The counter of lines read by `source`.
    pub fn lines_read_of(&self, source: &str) -> Counter {
        self.lines_read
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .clone()
    }

    /// The counter of events of `source` that no mapping covers.
    pub fn unmapped_of(&self, source: &str) -> Counter {
        self.events_unmapped
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .clone()
    }

    pub fn rejected(&self, source: &str, reason: &str) {
        self.rejected_lines(source, reason, 1);
    }

    /// Counts `n` lines of `source` rejected for `reason`.
    pub fn rejected_lines(&self, source: &str, reason: &str, n: u64) {
        self.lines_rejected
            .get_or_create(&RejectLabels {
                source: source.to_string(),
                reason: reason.to_string(),
            })
            .inc_by(n);
    }

    /// Counts `n` records dropped from `source`'s rejected file.
    pub fn rejected_dropped(&self, source: &str, n: u64) {
        self.rejected_dropped
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .inc_by(n);
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        match format {
            Format::OpenMetrics => out,
            Format::Text => text_of_openmetrics(&out),
        }
    }
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    /// What an `Accept` header asks for: OpenMetrics when it is named with a weight no lower than
    /// any other range that text would match (`text/plain`, `text/*`, `*/*`); text otherwise,
    /// and with no header.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let kind = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match kind.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Prometheus text 0.0.4 from OpenMetrics text: a counter's HELP and TYPE name its samples'
/// `_total` name, an info metric is a gauge named `_info`, a stateset a gauge, `unknown` is
/// `untyped`; `# UNIT` and `# EOF` are dropped. Samples are the same in both.
fn text_of_openmetrics(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP, held until its TYPE (which follows it) says what the family is called.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        let typed = line.strip_prefix("# TYPE ").map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            match kind {
                "counter" => (name, "_total", "counter"),
                "info" => (name, "_info", "gauge"),
                "stateset" => (name, "", "gauge"),
                "unknown" => (name, "", "untyped"),
                other => (name, "", other),
            }
        });
        if let Some((name, text)) = help.take() {
            let suffix = typed.filter(|t| t.0 == name).map_or("", |t| t.1);
            out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
        }
        match typed {
            Some((name, suffix, kind)) => out.push_str(&format!("# TYPE {name}{suffix} {kind}\n")),
            None if line == "# EOF" || line.starts_with("# UNIT ") => {}
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// A metric family of `M`, registered in `registry` as `name` with `help`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// `flagtail_build_info{version}`: always 1.
fn register_build_info(registry: &mut Registry) {
    let build_info = Family::<VersionLabel, Gauge>::default();
    build_info
        .get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .set(1);
    registry.register(
        "build_info",
        "Always 1; the running version is its label",
        build_info,
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_the_spec_names() {
        let m = super::get();
        m.lines_read_of("s").inc();
        m.rejected("s", "not_json");
        let sink = m.sink("k");
        sink.delivered.inc();
        sink.seconds.observe(0.01);
        m.source_lag_bytes
            .get_or_create(&super::SourceLabel { source: "s".into() })
            .set(3);
        let text = m.encode(super::Format::Text);
        for name in [
            "flagtail_lines_read_total{source=\"s\"}",
            "flagtail_lines_rejected_total{source=\"s\",reason=\"not_json\"}",
            "flagtail_deliveries_total{sink=\"k\",outcome=\"delivered\"} 1",
            "flagtail_deliveries_total{sink=\"k\",outcome=\"dead_letter\"} 0",
            "flagtail_delivery_retries_total{sink=\"k\"}",
            "flagtail_delivery_seconds_bucket{",
            "flagtail_source_lag_bytes{source=\"s\"} 3",
            "flagtail_build_info{version=\"",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
        for line in [
            "# HELP flagtail_lines_read_total Lines read from a source.",
            "# TYPE flagtail_lines_read_total counter",
            "# TYPE flagtail_delivery_seconds histogram",
            "# TYPE flagtail_build_info gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"));
        let openmetrics = m.encode(super::Format::OpenMetrics);
        assert!(openmetrics.contains("# TYPE flagtail_lines_read counter\n"));
        assert!(openmetrics.ends_with("# EOF\n"));
    }

    #[test]
    fn accept_chooses_the_format() {
        use super::Format::{OpenMetrics, Text};
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        for (accept, want) in [
            (None, Text),
            (Some("text/plain;version=0.0.4"), Text),
            (Some("*/*"), Text),
            (Some(prometheus), OpenMetrics),
            (Some("application/openmetrics-text"), OpenMetrics),
            (Some("application/openmetrics-text;q=0.2, text/plain"), Text),
            (Some("application/openmetrics-text;q=0"), Text),
        ] {
            assert_eq!(super::Format::negotiate(accept), want, "{accept:?}");
        }
    }
}
