//! The producer's metrics, as its events declare them, against the metrics table of
//! docs/OBSERVABILITY.md: names, types and labels cannot drift apart.
use std::collections::BTreeMap;

use codigo_producer::events::METRICS;

/// `name -> (type, labels)` for every `codigo_gateway_*` row of the table.
fn documented_gateway_metrics() -> BTreeMap<String, (String, Vec<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OBSERVABILITY.md");
    let text = std::fs::read_to_string(path).expect("docs/OBSERVABILITY.md is readable");
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `name` | type | labels | meaning |
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            if !name.starts_with("codigo_gateway_") {
                return None;
            }
            let labels = cells
                .get(3)?
                .split(',')
                .map(|l| l.trim().to_owned())
                .collect();
            Some((name.to_owned(), (cells.get(2)?.to_string(), labels)))
        })
        .collect()
}

#[test]
fn every_producer_metric_is_documented_as_it_is_emitted() {
    let documented = documented_gateway_metrics();
    assert!(
        !documented.is_empty(),
        "no codigo_gateway_* rows found in the metrics table of docs/OBSERVABILITY.md"
    );
    let emitted: BTreeMap<String, (String, Vec<String>)> = METRICS
        .iter()
        .map(|m| {
            let labels = m.labels.iter().map(|l| (*l).to_owned()).collect();
            (m.name.to_owned(), (m.kind.as_str().to_owned(), labels))
        })
        .collect();
    assert_eq!(
        emitted, documented,
        "the producer's metrics (producer/src/events.rs) and docs/OBSERVABILITY.md differ: \
         change both together, with observability/metrics.txt"
    );
}

#[test]
fn every_producer_metric_is_in_the_metrics_list() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../observability/metrics.txt");
    let text = std::fs::read_to_string(path).expect("observability/metrics.txt is readable");
    let listed: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("codigo_gateway_"))
        .collect();
    let emitted: Vec<String> = METRICS
        .iter()
        .map(|m| format!("{} {} {}", m.name, m.kind.as_str(), m.labels.join(",")))
        .collect();
    assert_eq!(
        emitted, listed,
        "observability/metrics.txt and producer/src/events.rs differ"
    );
}
