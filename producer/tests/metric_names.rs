//! The producer's metrics, as its events declare them, against observability/metrics.txt and
//! the metrics table of docs/OBSERVABILITY.md: names, types and labels cannot drift apart.
use codigo_common::metric;
use codigo_producer::events::METRICS;

const PREFIXES: [&str; 1] = ["codigo_gateway_"];

#[test]
fn every_producer_metric_is_documented_as_it_is_emitted() {
    let documented = metric::documented(include_str!("../../docs/OBSERVABILITY.md"), &PREFIXES);
    assert!(
        !documented.is_empty(),
        "no codigo_gateway_* rows found in the metrics table of docs/OBSERVABILITY.md"
    );
    assert_eq!(
        metric::declared(METRICS),
        documented,
        "the producer's metrics (producer/src/events.rs) and docs/OBSERVABILITY.md differ: \
         change both together, with observability/metrics.txt"
    );
}

#[test]
fn every_producer_metric_is_in_the_metrics_list() {
    let listed = metric::listed(include_str!("../../observability/metrics.txt"), &PREFIXES);
    assert_eq!(
        metric::declared(METRICS),
        listed,
        "observability/metrics.txt and producer/src/events.rs differ"
    );
}
