//! The metrics contract. Each service declares every metric it exports once, beside the events
//! that emit it: name, kind, labels and the help text Prometheus shows. Dashboards and alerts
//! are checked against `observability/metrics.txt` and docs/OBSERVABILITY.md, so each service
//! has a test holding its declarations equal to both ([`listed`], [`documented`]).
use metrics::{Label, SharedString, Unit};

/// How a metric aggregates, as metrics.txt and docs/OBSERVABILITY.md name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A metric a service exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub labels: &'static [&'static str],
    /// One sentence, ending with a full stop.
    pub help: &'static str,
}

impl Metric {
    /// One sample's labels, in the order of `self.labels`.
    pub fn labelled<const N: usize>(&self, values: [SharedString; N]) -> Vec<Label> {
        debug_assert_eq!(N, self.labels.len(), "{} label values", self.name);
        self.labels
            .iter()
            .zip(values)
            .map(|(&name, value)| Label::new(name, value))
            .collect()
    }

    /// The metric as observability/metrics.txt lists it: `name kind label,label`.
    pub fn contract_line(&self) -> String {
        format!(
            "{} {} {}",
            self.name,
            self.kind.as_str(),
            self.labels.join(",")
        )
        .trim_end()
        .to_owned()
    }
}

/// Gives the process's Prometheus recorder the help text and unit of `metrics`; only metrics
/// with values are rendered, so each process shows the help of its own.
pub fn describe(metrics: &[Metric]) {
    // The recorder must be installed first, or the descriptions go nowhere.
    crate::telemetry::metrics();
    for metric in metrics {
        let (name, help) = (metric.name, metric.help);
        match metric.kind {
            MetricKind::Counter => metrics::describe_counter!(name, Unit::Count, help),
            MetricKind::Gauge => metrics::describe_gauge!(name, Unit::Count, help),
            MetricKind::Histogram => metrics::describe_histogram!(name, Unit::Seconds, help),
        }
    }
}

/// The lines of `metrics_txt` (observability/metrics.txt) of the metrics named with one of
/// `prefixes`.
pub fn listed(metrics_txt: &str, prefixes: &[&str]) -> Vec<String> {
    metrics_txt
        .lines()
        .map(str::trim)
        .filter(|line| prefixes.iter().any(|prefix| line.starts_with(prefix)))
        .map(str::to_owned)
        .collect()
}

/// The rows of the metrics table of `observability_md` (docs/OBSERVABILITY.md,
/// `| `name` | kind | labels | meaning |`) of the metrics named with one of `prefixes`, as
/// metrics.txt lines.
pub fn documented(observability_md: &str, prefixes: &[&str]) -> Vec<String> {
    observability_md
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, name, kind, labels, ..] = cells.as_slice() else {
                return None;
            };
            let name = name.strip_prefix('`')?.strip_suffix('`')?;
            prefixes
                .iter()
                .any(|prefix| name.starts_with(prefix))
                .then(|| {
                    format!("{name} {kind} {}", labels.replace(' ', ""))
                        .trim_end()
                        .to_owned()
                })
        })
        .collect()
}

/// `metrics` as metrics.txt lines, each checked to have a help sentence.
pub fn declared(metrics: &[Metric]) -> Vec<String> {
    metrics
        .iter()
        .map(|metric| {
            let help = metric.help;
            assert!(
                help.ends_with('.') && !help.contains('\n'),
                "{}: the help text is one sentence ending with a full stop: {help:?}",
                metric.name
            );
            metric.contract_line()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUESTS: Metric = Metric {
        name: "codigo_gateway_requests_total",
        kind: MetricKind::Counter,
        labels: &["route", "method", "status"],
        help: "HTTP requests answered.",
    };

    #[test]
    fn contract_lines_are_read_from_the_list_and_the_table_alike() {
        let metrics_txt = "codigo_gateway_requests_total counter route,method,status\n\
                           codigo_consumer_in_flight gauge job_type\n";
        let table = "| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n\
                     | `codigo_gateway_requests_total` | counter | route, method, status | x |\n\
                     | `codigo_consumer_in_flight` | gauge | job_type | y |\n";
        let prefixes = ["codigo_gateway_"];
        assert_eq!(declared(&[REQUESTS]), listed(metrics_txt, &prefixes));
        assert_eq!(declared(&[REQUESTS]), documented(table, &prefixes));
        assert_eq!(
            listed(metrics_txt, &["codigo_consumer_"]),
            ["codigo_consumer_in_flight gauge job_type"]
        );
    }

    /// Each service tests its own metrics against the list by prefix, so a metric named
    /// otherwise would be checked by none of them.
    #[test]
    fn every_listed_metric_belongs_to_a_service_that_checks_it() {
        let metrics_txt = include_str!("../../observability/metrics.txt");
        let services = ["codigo_gateway_", "codigo_consumer_", "codigo_job_"];
        let all = listed(metrics_txt, &services);
        let lines: Vec<&str> = metrics_txt
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(all.len(), lines.len(), "{lines:#?}");
    }
}
