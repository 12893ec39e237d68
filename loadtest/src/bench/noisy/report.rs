//! The noisy-neighbour scenario's part of BENCHMARKS.md: what ran, the table and how it is
//! measured.
use super::super::table::{median, num, num_int, spread, verdict};
use super::super::{BenchArgs, Results};
use super::{
    NoisySample, ALONE, A_SHARE_TARGET, B_P99_TARGET_MS, B_RATE, LIMIT, LIMITED_JOBS, LIMIT_SKIP,
    LIMIT_WINDOW,
};

/// The scenario's section of one server set-up: what ran, and the table; empty when it did
/// not run.
pub(in crate::bench) fn section(args: &BenchArgs, results: &Results, heading: &str) -> String {
    use std::fmt::Write as _;

    let mut w = String::new();
    if results.noisy.is_empty() {
        return w;
    }
    let _ = writeln!(w, "{heading}\n");
    let _ = writeln!(
        w,
        "One producer and one consumer reading both tenants from a tenants file \
         (`CODIGO_TENANTS_FILE`: lanes of their own, fair dispatch), each tenant with an API key \
         of its own and no rate limit. In turn, on the same stack: tenant A floods the gateway \
         alone with {} jobs through batch POSTs ({} clients × {} jobs per request, as fast as it \
         takes them; `BENCH_NOISY_JOBS`), the single-tenant figure; tenant B sends single POSTs \
         open loop at {B_RATE:.0} jobs/s for {} s on the idle system; B again while A floods the \
         same way, until A's last job is done; then the file is rewritten to limit A to \
         {LIMIT:.0} jobs/s, the processes left running, and A floods {} jobs. Latency is end to \
         end, `finished_at - created_at` of each job's row; B's jobs under the flood are those \
         created before A's last job finished. A flood's throughput is its succeeded jobs over \
         its first `created_at` → last `finished_at`, ingest through the gateway included. The \
         limited rate is A's jobs finished in {} s from {} s after the first one.\n",
        num_int(args.noisy_jobs),
        args.batch_clients,
        args.batch_size,
        ALONE.as_secs(),
        num_int(LIMITED_JOBS),
        LIMIT_WINDOW.as_secs(),
        LIMIT_SKIP.as_secs(),
    );
    let drain: Vec<f64> = results.drain.iter().map(|d| d.jobs_per_sec).collect();
    table(&mut w, &results.noisy, &drain);
    w
}

/// The scenario's bullet of "How it is measured"; empty when it did not run.
pub(in crate::bench) fn how_measured(args: &BenchArgs, results: &Results) -> String {
    if results.noisy.is_empty() {
        return String::new();
    }
    format!(
        "- **Noisy neighbour**: tenant B's single POSTs leave on schedule at {B_RATE:.0} jobs/s \
         whatever the answers; A's {} jobs go in through batch POSTs with no backlog limit. \
         Each phase ends once every job of its tenants is settled (`jobs.status` past \
         `queued`, `scheduled`, `running` and `retrying`), and the rows are read after both; \
         a job refused at ingest counts as not succeeded.\n",
        num_int(args.noisy_jobs)
    )
}

/// `measure | min | median | max | target`; targets are judged on the medians, except that
/// every job must succeed in every repetition.
fn table(w: &mut String, samples: &[NoisySample], drain: &[f64]) {
    use std::fmt::Write as _;

    let row =
        |w: &mut String, measure: &str, values: &[f64], show: fn(f64) -> String, target: &str| {
            let cells = spread(values).map_or_else(
                || "— | — | —".to_owned(),
                |(median, min, max)| format!("{} | {} | {}", show(min), show(median), show(max)),
            );
            let _ = writeln!(w, "| {measure} | {cells} | {target} |");
        };
    let col = |f: fn(&NoisySample) -> f64| -> Vec<f64> { samples.iter().map(f).collect() };
    let judged = |values: &[f64], goal: &str, ok: fn(f64) -> bool| {
        format!("{goal}: {}", verdict(median(values).map(ok)))
    };
    let _ = writeln!(w, "| measure | min | median | max | target |");
    let _ = writeln!(w, "| --- | --- | --- | --- | --- |");
    row(w, "B p50 alone (ms)", &col(|s| s.b_alone.p50_ms), num, "—");
    row(w, "B p99 alone (ms)", &col(|s| s.b_alone.p99_ms), num, "—");
    row(
        w,
        "B p50 under A's flood (ms)",
        &col(|s| s.b_flooded.p50_ms),
        num,
        "—",
    );
    let flooded_p99 = col(|s| s.b_flooded.p99_ms);
    row(
        w,
        "B p99 under A's flood (ms)",
        &flooded_p99,
        num,
        &judged(&flooded_p99, &format!("≤ {B_P99_TARGET_MS:.0} ms"), |v| {
            v <= B_P99_TARGET_MS
        }),
    );
    row(
        w,
        "A's flood alone, single tenant (jobs/s)",
        &col(|s| s.a_alone_jobs_per_sec),
        num,
        "—",
    );
    row(
        w,
        "A's flood beside B (jobs/s)",
        &col(|s| s.a_jobs_per_sec),
        num,
        "—",
    );
    // Each repetition's flood against its own single-tenant flood: same stack, same way in.
    let kept = col(|s| 100.0 * s.a_jobs_per_sec / s.a_alone_jobs_per_sec.max(1e-9));
    row(
        w,
        "A beside B vs A alone (%)",
        &kept,
        num,
        &judged(
            &kept,
            &format!("≥ {:.0} %", 100.0 * A_SHARE_TARGET),
            |v| v >= 100.0 * A_SHARE_TARGET,
        ),
    );
    // And against its own drain: both ran on the same machine state.
    let shares: Vec<f64> = samples
        .iter()
        .zip(drain)
        .filter(|(_, drain)| **drain > 0.0)
        .map(|(s, drain)| 100.0 * s.a_jobs_per_sec / drain)
        .collect();
    if !shares.is_empty() {
        row(
            w,
            "A beside B vs the drain scenario (%)",
            &shares,
            num,
            "— (the drain has no ingest)",
        );
    }
    let limited = col(|s| s.a_limited_jobs_per_sec);
    row(
        w,
        &format!(
            "A limited to {LIMIT:.0}/s, over {} s (jobs/s)",
            LIMIT_WINDOW.as_secs()
        ),
        &limited,
        num,
        &judged(&limited, &format!("{LIMIT:.0} ± 10 %"), |v| {
            (LIMIT * 0.9..=LIMIT * 1.1).contains(&v)
        }),
    );
    #[allow(clippy::cast_precision_loss)]
    let failed = col(|s| s.not_succeeded as f64);
    row(
        w,
        "jobs not succeeded, both tenants",
        &failed,
        |v| num_int(v.round() as u64),
        &format!(
            "0 in every repetition: {}",
            verdict(Some(failed.iter().all(|v| *v == 0.0)))
        ),
    );
    let _ = writeln!(w);
}

#[cfg(test)]
mod tests {
    use crate::stats::Latency;

    use super::*;

    fn latency_of(p50_ms: f64, p99_ms: f64) -> Latency {
        Latency {
            count: 100,
            min_ms: 1.0,
            mean_ms: p50_ms,
            p50_ms,
            p90_ms: p99_ms,
            p95_ms: p99_ms,
            p99_ms,
            max_ms: p99_ms,
        }
    }

    fn sample(flooded_p99: f64, a_rate: f64, not_succeeded: u64) -> NoisySample {
        NoisySample {
            a_alone_jobs_per_sec: 32_000.0,
            a_limited_jobs_per_sec: 205.0,
            b_alone: latency_of(5.0, 9.0),
            b_flooded: latency_of(40.0, flooded_p99),
            a_jobs: 200_000,
            a_jobs_per_sec: a_rate,
            not_succeeded,
        }
    }

    #[test]
    fn the_table_judges_the_medians_against_the_targets() {
        let mut w = String::new();
        let samples = [
            sample(300.0, 30_000.0, 0),
            sample(200.0, 33_000.0, 0),
            sample(240.0, 20_000.0, 2),
        ];
        // A alone 32,000 jobs/s in every repetition: shares 93.8, 103 and 62.5 %; against a
        // drain of 35,000: 85.7, 94.3 and 57.1 %.
        table(&mut w, &samples, &[35_000.0; 3]);
        for line in [
            "| measure | min | median | max | target |",
            "| B p99 alone (ms) | 9.00 | 9.00 | 9.00 | — |",
            "| B p50 under A's flood (ms) | 40.0 | 40.0 | 40.0 | — |",
            "| B p99 under A's flood (ms) | 200 | 240 | 300 | ≤ 250 ms: met |",
            "| A's flood beside B (jobs/s) | 20,000 | 30,000 | 33,000 | — |",
            "| A beside B vs A alone (%) | 62.5 | 93.8 | 103 | ≥ 90 %: met |",
            "| A beside B vs the drain scenario (%) | 57.1 | 85.7 | 94.3 | — (the drain has no ingest) |",
            "| A limited to 200/s, over 30 s (jobs/s) | 205 | 205 | 205 | 200 ± 10 %: met |",
            "| jobs not succeeded, both tenants | 0 | 0 | 2 | 0 in every repetition: **missed** |",
        ] {
            assert!(w.lines().any(|l| l == line), "{line:?} not in\n{w}");
        }
        assert!(!w.contains("did not run"), "{w}");
    }

    #[test]
    fn without_the_drain_its_row_is_left_out() {
        let mut w = String::new();
        table(&mut w, &[sample(900.0, 30_000.0, 0)], &[]);
        assert!(
            w.contains("| B p99 under A's flood (ms) | 900 | 900 | 900 | ≤ 250 ms: **missed** |"),
            "{w}"
        );
        assert!(
            w.contains(
                "| jobs not succeeded, both tenants | 0 | 0 | 0 | 0 in every repetition: met |"
            ),
            "{w}"
        );
        assert!(!w.contains("| A beside B vs the drain"), "{w}");
    }
}
