//! BENCHMARKS.md and its latency plot.
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use time::OffsetDateTime;

use crate::baseline::BaselineReport;
use crate::error::LoadError;
use crate::procfs::Rss;
use crate::run::Report;

use super::cluster::Clustered;
use super::cpu::Cpu;
use super::load::LoadSample;
use super::machine::Machine;
use super::peers::{self, Nats, PeerFacts};
use super::previous;
use super::table::{cell, median, mib, num_int, num_or_dash, results_table, verdict};
use super::{BenchArgs, Results};

/// Relative path from the report's directory to the plot, for the Markdown link.
pub(super) fn relative_link(report: &Path, plot: &Path) -> String {
    let base = report.parent().unwrap_or_else(|| Path::new(""));
    plot.strip_prefix(base)
        .unwrap_or(plot)
        .to_string_lossy()
        .replace('\\', "/")
}

pub(super) fn write_report(
    args: &BenchArgs,
    machine: &Machine,
    results: &Results,
    clustered: Option<&Clustered>,
    peer: Option<&PeerFacts>,
    started: OffsetDateTime,
    finished: OffsetDateTime,
) -> Result<(), LoadError> {
    use std::fmt::Write as _;

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `make bench` (`codigo-loadtest bench`) on {} in {:.0} min, commit {}. \
         Every scenario ran {}, each repetition against freshly started release binaries \
         (`codigo-producer`, `codigo-consumer`) in a NATS namespace and database of its own, \
         set up by `codigo-ctl setup` and removed afterwards. Cells show the median and, in \
         brackets, the minimum–maximum over the repetitions. Ratios compare with the bare \
         async-nats + sqlx baseline measured in the same run.\n",
        started.date(),
        (finished - started).as_seconds_f64() / 60.0,
        machine.commit,
        match args.reps.max(1) {
            1 => "once".to_owned(),
            n => format!("{n} times"),
        },
    );
    let _ = writeln!(
        w,
        "Re-run with `make bench`; `BENCH_REPS`, `BENCH_DURATION_SECS`, `BENCH_DRAIN_JOBS` and \
         `BENCH_SCENARIOS` (e.g. `max-batch,drain`) change its size, `BENCH_CLUSTER=0` leaves \
         out the production-profile cluster, and `make bench-peers` runs the drains beside \
         Graphile Worker's batch jobs on the same job. The drain scenarios use {} \
         jobs{}. A run takes the whole machine: the load generator, both services, NATS and \
         Postgres share its cores.\n",
        num_int(args.drain_jobs),
        if args.drain_jobs < 500_000 {
            ", fewer than the standard 500,000 (`BENCH_DRAIN_JOBS=500000 make bench`)"
        } else {
            " (`BENCH_DRAIN_JOBS=100000` makes a quicker run)"
        }
    );

    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(w, "| | |\n| --- | --- |");
    machine.write_rows(w);
    let _ = writeln!(
        w,
        "| jobs | `ledger.post`, {} B stored per job (envelope and headers, memo padding), over {} accounts |",
        args.job_bytes, args.accounts
    );
    let overrides = [
        ("consumer", &args.consumer_env),
        ("producer", &args.producer_env),
    ]
    .iter()
    .flat_map(|(who, vars)| vars.iter().map(move |(k, v)| format!("{who} `{k}={v}`")))
    .collect::<Vec<_>>();
    let _ = writeln!(
        w,
        "| services | one producer (rate limit off), one consumer (`ledger.post`) unless said \
         otherwise; default settings, `RUST_LOG=info`, `LOG_FORMAT=json`{} |\n",
        if overrides.is_empty() {
            String::new()
        } else {
            format!("; overridden: {}", overrides.join(", "))
        }
    );

    let _ = writeln!(w, "## Results\n");
    results_table(w, args, results, 20.0);
    let peer_section = |w: &mut String, heading: &str, results: &Results, nats: Nats<'_>| {
        if let Some(facts) = peer.filter(|_| !results.peers.is_empty()) {
            let _ = writeln!(w, "{heading}\n");
            peers::write_section(w, args, results, facts, &nats);
        }
    };
    peer_section(
        w,
        "### Peer: Graphile Worker batch jobs",
        results,
        Nats::Single {
            cluster_follows: clustered.is_some_and(|c| !c.results.peers.is_empty()),
        },
    );
    if let Some(clustered) = clustered {
        let profile = &clustered.profile;
        let _ = writeln!(
            w,
            "### Production profile: {}-node cluster, R{} streams, `sync_interval: {}`\n",
            clustered.servers, profile.stream_replicas, profile.sync_interval
        );
        let _ = writeln!(
            w,
            "The same scenarios, in the same run, on {} nats-servers of the same release on this \
             machine, joined by routes, with the settings production runs \
             (deploy/nats/cluster.conf, which the chart's values are checked against): work and \
             dead-letter streams at {} replicas, every write fsynced before its ack, a \
             {} s duplicate window. The bare baseline ran on the same cluster, so the ratios \
             compare like with like. The targets here: batch ingest end to end ≥ 70 % of the \
             bare pipeline, drain ≥ 80 % of the bare drain, ingest p99 < 50 ms at half the \
             sustained single-POST rate.\n",
            clustered.servers, profile.stream_replicas, profile.duplicate_window_secs
        );
        results_table(w, args, &clustered.results, 50.0);
        peer_section(
            w,
            "#### Peer on the production profile: Graphile Worker batch jobs",
            &clustered.results,
            Nats::Cluster {
                servers: clustered.servers,
                profile: &clustered.profile,
            },
        );
    }

    if !results.baseline.is_empty() {
        let b = &results.baseline;
        let col = |f: Measure| -> Vec<f64> { b.iter().map(f).collect() };
        let _ = writeln!(w, "### Bare baseline\n");
        let _ = writeln!(
            w,
            "async-nats and sqlx alone on the same servers, {} jobs per measurement, no HTTP and no \
             validation. The bare pipeline runs {} fetch → transaction → ack loops of up to {} \
             messages: one transaction per fetched batch doing the `ledger.post` handler's SQL \
             (ledger entries `ON CONFLICT DO NOTHING`, balance upserts, `jobs` row upserts), each \
             statement once per batch over arrays (`UNNEST`), balance changes summed per account.\n",
            num_int(b[0].jobs),
            b[0].workers,
            b[0].fetch_batch
        );
        let _ = writeln!(w, "| measure | per second |\n| --- | --- |");
        let rows: [(&str, Measure); 5] = [
            ("JetStream publish, pipelined acks, `Nats-Msg-Id`", |r| {
                r.publish_per_sec
            }),
            ("pull consume + ack (full stream)", |r| {
                r.consume_ack_per_sec
            }),
            ("bare pipeline while publishing", |r| {
                r.pipeline_live_per_sec
            }),
            ("bare pipeline draining a full stream", |r| {
                r.pipeline_drain_per_sec
            }),
            (
                "the same drain with the statements run once per job (one transaction per batch \
                 still; a quarter of the jobs)",
                |r| r.rowwise_drain_per_sec,
            ),
        ];
        for (measure, value) in rows {
            let _ = writeln!(w, "| {measure} | {} |", cell(&col(value)));
        }
        let _ = writeln!(w);
    }

    let (batch, single) = (&results.max_batch, &results.max_single);
    let rss_rows: Vec<(&str, Vec<f64>)> = vec![
        (
            "producer, sustained batch ingest",
            peaks(batch.iter().map(|s| s.producer)),
        ),
        (
            "producer, sustained single POST",
            peaks(single.iter().map(|s| s.producer)),
        ),
        (
            "consumer, sustained batch ingest",
            peaks(batch.iter().map(|s| s.consumer)),
        ),
        (
            "consumer, sustained single POST",
            peaks(single.iter().map(|s| s.consumer)),
        ),
        (
            "consumer, draining a full stream",
            peaks(results.drain.iter().map(|s| s.consumer)),
        ),
    ];
    if rss_rows.iter().any(|(_, v)| !v.is_empty()) {
        let _ = writeln!(w, "### Memory\n");
        let _ = writeln!(
            w,
            "Peak resident memory (VmHWM) of each process over its repetition.\n"
        );
        let _ = writeln!(
            w,
            "| process, load | peak RSS MiB | target |\n| --- | --- | --- |"
        );
        for (name, values) in rss_rows.iter().filter(|(_, v)| !v.is_empty()) {
            let _ = writeln!(
                w,
                "| {name} | {} | < 64 MiB: {} |",
                cell(values),
                verdict(median(values).map(|v| v < 64.0))
            );
        }
        let _ = writeln!(w);
    }

    let cpu_rows: Vec<(&str, Vec<CpuSample>)> = vec![
        ("sustained, batch ingest", load_cpu(&results.max_batch)),
        ("sustained, single POST", load_cpu(&results.max_single)),
        (
            "sustained, direct to JetStream",
            load_cpu(&results.max_nats),
        ),
        (
            "latency, half the single-POST rate",
            load_cpu(&results.latency),
        ),
        (
            "drain, one consumer",
            results
                .drain
                .iter()
                .map(|d| (d.cpu, d.jobs, d.secs))
                .collect(),
        ),
    ];
    if cpu_rows.iter().any(|(_, v)| !v.is_empty()) {
        let _ = writeln!(w, "### Where the CPU goes\n");
        let _ = writeln!(
            w,
            "CPU time per job (µs; user + system, from `/proc/<pid>/stat`) of each part while the \
             scenario ran, median over the repetitions, and how many of the machine's cores the \
             parts kept busy together. NATS is the whole server, so other users of it count too.\n"
        );
        let _ = writeln!(
            w,
            "| scenario | load generator | producer | consumer | nats-server | Postgres backends | total | cores busy |"
        );
        let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for (name, samples) in cpu_rows.iter().filter(|(_, v)| !v.is_empty()) {
            let per_job = |part: usize| -> Vec<f64> {
                samples
                    .iter()
                    .map(|(cpu, jobs, _)| {
                        #[allow(clippy::cast_precision_loss)]
                        let jobs = (*jobs).max(1) as f64;
                        cpu.parts()[part].as_secs_f64() * 1e6 / jobs
                    })
                    .collect()
            };
            let total: Vec<f64> = samples
                .iter()
                .map(|(cpu, jobs, _)| {
                    #[allow(clippy::cast_precision_loss)]
                    let jobs = (*jobs).max(1) as f64;
                    cpu.parts().iter().map(Duration::as_secs_f64).sum::<f64>() * 1e6 / jobs
                })
                .collect();
            let busy: Vec<f64> = samples
                .iter()
                .map(|(cpu, _, secs)| {
                    cpu.parts().iter().map(Duration::as_secs_f64).sum::<f64>() / secs.max(1e-9)
                })
                .collect();
            let _ = writeln!(
                w,
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                num_or_dash(median(&per_job(0))),
                num_or_dash(median(&per_job(1))),
                num_or_dash(median(&per_job(2))),
                num_or_dash(median(&per_job(3))),
                num_or_dash(median(&per_job(4))),
                num_or_dash(median(&total)),
                num_or_dash(median(&busy)),
            );
        }
        let _ = writeln!(w);
    }

    if !results.latency.is_empty() {
        let _ = writeln!(w, "### Latency at half the single-POST rate\n");
        let _ = writeln!(
            w,
            "Open loop: requests leave on schedule whatever the answers, and ingest latency counts \
             from each request's due time (no coordinated omission). End to end is \
             `jobs.finished_at - jobs.created_at` of each committed row, read from Postgres.\n"
        );
        let _ = writeln!(
            w,
            "| ms | p50 | p90 | p95 | p99 | max |\n| --- | --- | --- | --- | --- | --- |"
        );
        for (name, get) in [
            (
                "ingest (POST /v1/jobs)",
                (|r: &Report| r.ingest_latency) as fn(&Report) -> _,
            ),
            ("end to end", |r: &Report| r.e2e_latency),
        ] {
            let values: Vec<_> = results
                .latency
                .iter()
                .filter_map(|s| get(&s.report))
                .collect();
            let col = |f: fn(&crate::stats::Latency) -> f64| -> String {
                cell(&values.iter().map(f).collect::<Vec<_>>())
            };
            let _ = writeln!(
                w,
                "| {name} | {} | {} | {} | {} | {} |",
                col(|l| l.p50_ms),
                col(|l| l.p90_ms),
                col(|l| l.p95_ms),
                col(|l| l.p99_ms),
                col(|l| l.max_ms)
            );
        }
        let _ = writeln!(
            w,
            "\n![latency distribution at half the single-POST rate]({})\n",
            relative_link(&args.out, &args.plot)
        );
        // All repetitions merged: the plot shows every sample.
        let mut ingest = crate::stats::histogram();
        let mut e2e = crate::stats::histogram();
        for sample in &results.latency {
            let _ = ingest.add(&sample.report.ingest_histogram);
            if let Some(h) = &sample.report.e2e_histogram {
                let _ = e2e.add(h);
            }
        }
        write_plot(args, &ingest, &e2e)?;
    }

    let _ = writeln!(w, "## How it is measured\n");
    let _ = writeln!(
        w,
        "- **Sustained rate**: a closed loop for {} s whose clients pause while the work stream \
         holds more than {} jobs, so that the rate is what the whole pipeline keeps up with, not \
         how fast a backlog grows. End-to-end jobs/s = jobs committed / (first request → last \
         commit).\n\
         - **End-to-end latency**: `jobs.finished_at - jobs.created_at` of every accepted job's \
         row, read from Postgres after the run (robust: one row per job id, only once its effects \
         committed; redeliveries cannot count twice). `created_at` is stamped by the producer when \
         it builds the envelope; `finished_at` just before the consumer's commit.\n\
         - **Drain**: {} jobs published straight to JetStream with no consumer running, then the \
         consumer process(es) started; jobs/s = jobs / (process start → last commit). The first \
         ack is seen by subscribing to the stream's `$JS.ACK` subjects.\n\
         {}- **Memory**: VmHWM from `/proc/<pid>/status` at the end of each repetition.\n\
         - **Between measurements**: Postgres runs a `CHECKPOINT` and the benchmark waits (30 s \
         at most) for the machine's CPUs to fall under 15 % busy, so that no measurement pays for \
         the writes and file removals of the one before.\n",
        args.duration_secs,
        args.max_backlog,
        num_int(args.drain_jobs),
        if peer.is_some() {
            format!(
                "- **Peer** (`make bench-peers`, or `peers` in `BENCH_SCENARIOS`): Graphile \
                 Worker from loadtest/peers, installed by scripts/peers.sh (`npm ci` of its \
                 lockfile) with a private PostgreSQL, runs in every repetition after the drains, \
                 on as many payloads as they drain, after bench.js's own wait for a quiet machine \
                 (a run that other processes disturbed runs again, {} runs at most); every run is \
                 checked by counts and sums.\n",
                peers::ATTEMPTS
            )
        } else {
            String::new()
        },
    );

    // The report this one replaces, read back before it is overwritten.
    let before = std::fs::read_to_string(&args.out)
        .map(|text| previous::parse(&text))
        .unwrap_or_default();
    let against = previous::comparison(&before, &previous::parse(&md));
    if !against.is_empty() {
        println!("{against}");
        let at = md.find("## How it is measured").unwrap_or(md.len());
        md.insert_str(at, &against);
    }
    std::fs::write(&args.out, md).map_err(|source| LoadError::Write {
        path: args.out.clone(),
        source,
    })
}

/// One number of every bare baseline measurement.
type Measure = fn(&BaselineReport) -> f64;

/// Peak memory in MiB, one value a repetition.
fn peaks(rss: impl Iterator<Item = Rss>) -> Vec<f64> {
    rss.map(|r| mib(r.peak_kib)).collect()
}

/// CPU, completed jobs and seconds of one repetition.
pub(super) type CpuSample = (Cpu, u64, f64);

pub(super) fn load_cpu(samples: &[LoadSample]) -> Vec<CpuSample> {
    samples
        .iter()
        .map(|s| {
            (
                s.cpu,
                s.report.jobs.completed,
                s.report.e2e_secs.unwrap_or(s.report.send_secs),
            )
        })
        .collect()
}

pub(super) fn write_plot(
    args: &BenchArgs,
    ingest: &Histogram<u64>,
    e2e: &Histogram<u64>,
) -> Result<(), LoadError> {
    if let Some(dir) = args.plot.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| LoadError::Write {
            path: dir.to_owned(),
            source,
        })?;
    }
    crate::plot::write(
        &args.plot,
        "Codigo latency at half the single-POST rate",
        &[
            crate::plot::Series {
                label: "ingest (POST /v1/jobs, from due time)".into(),
                histogram: ingest,
            },
            crate::plot::Series {
                label: "end to end (created_at to committed row)".into(),
                histogram: e2e,
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_link_is_relative_to_the_report() {
        assert_eq!(
            relative_link(
                Path::new("BENCHMARKS.md"),
                Path::new("docs/bench/latency.svg")
            ),
            "docs/bench/latency.svg"
        );
        assert_eq!(
            relative_link(Path::new("out/B.md"), Path::new("out/l.svg")),
            "l.svg"
        );
    }
}
