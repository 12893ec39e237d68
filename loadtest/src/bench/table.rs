//! The results table and the number formats of the report's cells.

use crate::run::Report;

use super::load::LoadSample;
use super::{BenchArgs, Results};

/// Median, minimum and maximum.
pub(super) fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    };
    Some((median, sorted[0], sorted[sorted.len() - 1]))
}

pub(super) fn num(value: f64) -> String {
    if value >= 100.0 {
        let rounded = format!("{value:.0}");
        // Thousands separators for readability.
        let mut out = String::new();
        for (i, c) in rounded.chars().enumerate() {
            if i > 0 && (rounded.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// `median (min–max)`.
pub(super) fn cell(values: &[f64]) -> String {
    match spread(values) {
        Some((median, min, max)) if values.len() > 1 => {
            format!("{} ({}–{})", num(median), num(min), num(max))
        }
        Some((median, _, _)) => num(median),
        None => "not run".into(),
    }
}

pub(super) fn median(values: &[f64]) -> Option<f64> {
    spread(values).map(|s| s.0)
}

pub(super) fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

pub(super) fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "—",
    }
}

pub(super) fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{:.0} %", 100.0 * v))
}

pub(super) fn mib(kib: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let kib = kib as f64;
    kib / 1024.0
}

pub(super) fn num_or_dash(value: Option<f64>) -> String {
    match value {
        Some(v) if v > 0.0 => num(v),
        _ => "—".into(),
    }
}

pub(super) fn num_int(value: u64) -> String {
    if value < 100 {
        // `num` gives small values decimals, which counts do not have.
        return value.to_string();
    }
    #[allow(clippy::cast_precision_loss)]
    num(value as f64)
}

/// The results table of one server set-up: every scenario against the bare baseline of the
/// same run and set-up.
pub(super) fn results_table(
    w: &mut String,
    args: &BenchArgs,
    results: &Results,
    latency_target_ms: f64,
) {
    use std::fmt::Write as _;

    let e2e_rates = |samples: &[LoadSample]| -> Vec<f64> {
        samples
            .iter()
            .filter_map(|s| s.report.throughput.e2e_jobs_per_sec)
            .collect()
    };
    let ingest_rates = |samples: &[LoadSample]| -> Vec<f64> {
        samples
            .iter()
            .map(|s| s.report.throughput.ingest_jobs_per_sec)
            .collect()
    };
    let bare_live: Vec<f64> = results
        .baseline
        .iter()
        .map(|b| b.pipeline_live_per_sec)
        .collect();
    let bare_drain: Vec<f64> = results
        .baseline
        .iter()
        .map(|b| b.pipeline_drain_per_sec)
        .collect();
    let bare_live_median = median(&bare_live);
    let bare_drain_median = median(&bare_drain);

    let _ = writeln!(w, "| scenario | measure | result | vs bare | target |");
    let _ = writeln!(w, "| --- | --- | --- | --- | --- |");
    let load_rows: [(&str, &[LoadSample], Option<f64>); 3] = [
        (
            "sustained rate, batch ingest",
            &results.max_batch,
            Some(0.70),
        ),
        (
            "sustained rate, single POST",
            &results.max_single,
            Some(0.35),
        ),
        (
            "sustained rate, direct to JetStream",
            &results.max_nats,
            None,
        ),
    ];
    let clients = [
        format!(
            "{} clients × {} jobs per request",
            args.batch_clients, args.batch_size
        ),
        format!("{} clients", args.single_clients),
        format!("{} publishes in flight", args.nats_clients),
    ];
    for ((name, samples, target), how) in load_rows.iter().zip(&clients) {
        if samples.is_empty() {
            continue;
        }
        let e2e = e2e_rates(samples);
        let share = ratio(median(&e2e), bare_live_median);
        let _ = writeln!(
            w,
            "| {name} ({how}, {} s, backlog ≤ {}) | end-to-end jobs/s | {} | {} | {} |",
            args.duration_secs,
            args.max_backlog,
            cell(&e2e),
            pct(share),
            target.map_or_else(
                || "—".to_owned(),
                |t| format!("≥ {:.0} %: {}", t * 100.0, verdict(share.map(|s| s >= t)))
            )
        );
        let _ = writeln!(
            w,
            "| | ingest jobs/s (accepted) | {} | | |",
            cell(&ingest_rates(samples))
        );
    }
    if !results.latency.is_empty() {
        let p99 = |f: fn(&Report) -> Option<f64>| -> Vec<f64> {
            results
                .latency
                .iter()
                .filter_map(|s| f(&s.report))
                .collect()
        };
        let ingest_p99 = p99(|r| r.ingest_latency.map(|l| l.p99_ms));
        let e2e_p99 = p99(|r| r.e2e_latency.map(|l| l.p99_ms));
        let rate = median(&results.latency_rates).unwrap_or(0.0);
        let _ = writeln!(
            w,
            "| latency at half the single-POST rate (open loop, {} jobs/s, {} s) | ingest p99 ms | {} | | < {} ms: {} |",
            num(rate),
            args.duration_secs,
            cell(&ingest_p99),
            num(latency_target_ms),
            verdict(median(&ingest_p99).map(|v| v < latency_target_ms))
        );
        let _ = writeln!(
            w,
            "| | end-to-end p99 ms | {} | | < 100 ms: {} |",
            cell(&e2e_p99),
            verdict(median(&e2e_p99).map(|v| v < 100.0))
        );
    }
    if !results.drain.is_empty() {
        let rates: Vec<f64> = results.drain.iter().map(|d| d.jobs_per_sec).collect();
        let share = ratio(median(&rates), bare_drain_median);
        let _ = writeln!(
            w,
            "| drain {} queued jobs, one consumer started afterwards | jobs/s | {} | {} of bare drain | ≥ 80 %: {} |",
            num_int(args.drain_jobs),
            cell(&rates),
            pct(share),
            verdict(share.map(|s| s >= 0.8))
        );
    }
    if !results.delayed.is_empty() {
        let p99: Vec<f64> = results.delayed.iter().map(|d| d.p99_ms).collect();
        let p50: Vec<f64> = results.delayed.iter().map(|d| d.p50_ms).collect();
        let max: Vec<f64> = results.delayed.iter().map(|d| d.max_ms).collect();
        let jobs = results.delayed.iter().map(|d| d.jobs).sum::<usize>();
        let _ = writeln!(
            w,
            "| delayed jobs (20/s, due 2 s later) beside the sustained batch ingest, {jobs} in all | start lateness p99 ms | {} | | ≤ 1000 ms: {} |",
            cell(&p99),
            verdict(median(&p99).map(|v| v <= 1000.0))
        );
        let _ = writeln!(w, "| | start lateness p50 ms | {} | | |", cell(&p50));
        let _ = writeln!(w, "| | start lateness max ms | {} | | |", cell(&max));
    }
    if !results.drain_two.is_empty() {
        let rates: Vec<f64> = results.drain_two.iter().map(|d| d.jobs_per_sec).collect();
        let one: Vec<f64> = results.drain.iter().map(|d| d.jobs_per_sec).collect();
        let _ = writeln!(
            w,
            "| drain {} queued jobs, two consumers | jobs/s | {} | {} of bare drain; {} of one consumer | — |",
            num_int(args.drain_jobs),
            cell(&rates),
            pct(ratio(median(&rates), bare_drain_median)),
            pct(ratio(median(&rates), median(&one)))
        );
    }
    if !results.drain.is_empty() {
        let first: Vec<f64> = results.drain.iter().map(|d| d.first_ack_ms).collect();
        let _ = writeln!(
            w,
            "| scale from zero: consumer process start to its first ack, stream full | ms | {} | | ≤ 300 ms: {} |",
            cell(&first),
            verdict(median(&first).map(|v| v <= 300.0))
        );
    }
    let _ = writeln!(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_median_and_range() {
        assert_eq!(cell(&[3.0, 1.0, 2.0]), "2.00 (1.00–3.00)");
        assert_eq!(cell(&[1200.0, 1000.0]), "1,100 (1,000–1,200)");
        assert_eq!(cell(&[12_345.6]), "12,346");
        assert_eq!(cell(&[]), "not run");
        assert_eq!(num_int(50), "50");
        assert_eq!(num_int(200_000), "200,000");
        assert_eq!(pct(ratio(Some(1.0), Some(4.0))), "25 %");
        assert_eq!(pct(ratio(Some(1.0), Some(0.0))), "—");
    }
}
