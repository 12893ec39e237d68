//! `codigo-loadtest bench` (what `make bench` runs): the standard scenarios, each repeated,
//! against the release binaries started as processes, every repetition in a namespace and
//! database of its own; then BENCHMARKS.md and its latency plot.
//!
//! Repetitions are the outer loop (every scenario once, then again), so that anything else
//! the machine does during the benchmark spreads over all scenarios instead of skewing one.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use codigo_common::config::{DatabaseArgs, NatsArgs};
use codigo_common::nats::{self, InitialConnect};
use codigo_testkit::process::Binaries;
use time::OffsetDateTime;

use crate::baseline::{self, BaselineReport, BaselineSpec};
use crate::driver::Load;
use crate::error::LoadError;
use crate::run::RunSpec;
use crate::scratch::Server;
use crate::target::Ingest;

mod cluster;
mod cpu;
mod delayed;
mod drain;
mod load;
mod machine;
mod peers;
mod previous;
mod report;
mod stack;
mod table;

use self::cluster::on_cluster;
use self::cpu::settle;
use self::delayed::{delayed_rep, DelayedSample};
use self::drain::{drain_rep, DrainSample};
use self::load::{load_rep, LoadSample};
use self::machine::Machine;
use self::peers::{graphile_rep, PeerRun};
use self::report::write_report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    /// The bare async-nats + sqlx baseline.
    Baseline,
    /// Sustained rate with batch ingest.
    MaxBatch,
    /// Sustained rate with single POSTs.
    MaxSingle,
    /// Sustained rate publishing straight to JetStream.
    MaxNats,
    /// Open loop of single POSTs at half the sustained single-POST rate.
    Latency,
    /// Delayed jobs submitted beside the sustained batch ingest: how late they start.
    Delayed,
    /// A full stream drained by one consumer started afterwards (also: time to first ack).
    Drain,
    /// The same drained by two consumers.
    DrainTwo,
    /// Graphile Worker's batch jobs on as many payloads as the drain, after it in every
    /// repetition; only when named (`make bench-peers`), as it needs scripts/peers.sh.
    Peers,
}

impl Scenario {
    /// Run when BENCH_SCENARIOS names none: all but the peer, which needs Node.js and a
    /// Postgres of its own.
    fn by_default(self) -> bool {
        self != Self::Peers
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Directory holding codigo-producer, codigo-consumer and codigo-ctl.
    #[arg(long, env = "CODIGO_BENCH_BIN_DIR", default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Report to (re)write.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Latency plot to (re)write, referenced from the report by a path relative to it.
    #[arg(long, default_value = "docs/bench/latency.svg")]
    pub plot: PathBuf,
    /// Repetitions of every scenario.
    #[arg(long, env = "BENCH_REPS", default_value_t = 3)]
    pub reps: usize,
    /// Seconds of sending in the rate and latency scenarios.
    #[arg(long, env = "BENCH_DURATION_SECS", default_value_t = 10)]
    pub duration_secs: u64,
    /// Jobs in the stream the drain scenarios empty.
    #[arg(long, env = "BENCH_DRAIN_JOBS", default_value_t = 500_000)]
    pub drain_jobs: u64,
    /// Jobs per baseline measurement (default: the drain size).
    #[arg(long, env = "BENCH_BASELINE_JOBS")]
    pub baseline_jobs: Option<u64>,
    /// Rate scenarios: clients pause while the stream holds more jobs than this.
    #[arg(long, env = "BENCH_MAX_BACKLOG", default_value_t = 5_000)]
    pub max_backlog: u64,
    /// Rate of the latency scenario in jobs/s (default: half the measured single-POST rate).
    #[arg(long, env = "BENCH_LATENCY_RATE")]
    pub latency_rate: Option<f64>,
    /// Scenarios to run, comma separated (default: all but `peers`).
    #[arg(long, env = "BENCH_SCENARIOS", value_delimiter = ',', value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Batch-ingest clients and jobs per batch.
    #[arg(long, default_value_t = 4)]
    pub batch_clients: usize,
    #[arg(long, default_value_t = 100)]
    pub batch_size: u64,
    /// Single-POST clients.
    #[arg(long, default_value_t = 64)]
    pub single_clients: usize,
    /// Publishes awaiting their JetStream ack at once, for direct ingest.
    #[arg(long, default_value_t = 256)]
    pub nats_clients: usize,
    #[arg(long, default_value_t = 1000)]
    pub accounts: u64,
    #[arg(long, default_value_t = 512)]
    pub job_bytes: usize,
    #[arg(long, default_value_t = 4)]
    pub baseline_workers: usize,
    #[arg(long, default_value_t = 256)]
    pub baseline_fetch: usize,
    /// Extra environment of every consumer process, `KEY=VALUE`, repeatable (to measure a
    /// setting, e.g. `--consumer-env CODIGO_CONCURRENCY=256`).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    pub consumer_env: Vec<(String, String)>,
    /// Extra environment of every producer process, `KEY=VALUE`, repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    pub producer_env: Vec<(String, String)>,
    /// After the single-server scenarios, run them again in the production profile: a local
    /// cluster of this many pinned nats-servers with the streams and `sync_interval` of
    /// deploy/nats/cluster.conf, the bare baseline on the same cluster; 0 skips it.
    #[arg(long, env = "BENCH_CLUSTER", default_value_t = 3)]
    pub cluster: usize,
    /// Folder scripts/peers.sh prepared for the peers scenario: the scripts of
    /// loadtest/peers, their node_modules, the peer's Postgres and its results.jsonl.
    #[arg(long, env = "BENCH_PEERS_DIR", default_value = ".local/peers")]
    pub peers_dir: PathBuf,
    /// Port of the peer's private Postgres (scripts/peers.sh reads the same variable).
    #[arg(long, env = "BENCH_PEERS_PG_PORT", default_value_t = 15433)]
    pub peers_pg_port: u16,
    /// Graphile Worker jobs run at once by the peer's worker.
    #[arg(long, default_value_t = 8)]
    pub peers_concurrency: usize,
    /// Payloads per Graphile Worker batch job (BENCH_DRAIN_JOBS must be a multiple).
    #[arg(long, default_value_t = 100)]
    pub peers_batch: u64,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Server on which each repetition creates (and drops) its database.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

fn key_value(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?} is not KEY=VALUE"))
}

struct Ctx<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) bins: Binaries,
    pub(super) server: Server,
    pub(super) client: async_nats::Client,
    pub(super) http: reqwest::Client,
    pub(super) logs: PathBuf,
    pub(super) token: String,
    /// Replicas of every stream: 1 on the single server, the profile's on the cluster.
    pub(super) replicas: usize,
    /// The cluster's servers, when the scenarios run on one.
    pub(super) nats_pids: Option<Vec<u32>>,
}

#[derive(Default)]
struct Results {
    pub(super) baseline: Vec<BaselineReport>,
    pub(super) max_batch: Vec<LoadSample>,
    pub(super) max_single: Vec<LoadSample>,
    pub(super) max_nats: Vec<LoadSample>,
    pub(super) latency: Vec<LoadSample>,
    pub(super) latency_rates: Vec<f64>,
    pub(super) delayed: Vec<DelayedSample>,
    pub(super) drain: Vec<DrainSample>,
    pub(super) drain_two: Vec<DrainSample>,
    pub(super) peers: Vec<PeerRun>,
}

/// Where a scenario's samples go.
type SamplesOf = fn(&mut Results) -> &mut Vec<LoadSample>;

pub async fn run(args: BenchArgs) -> Result<(), LoadError> {
    let bins = Binaries::in_dir(&args.bin_dir)?;
    // Before anything is measured: a peer that cannot run would fail the run at its end.
    let peer = if wanted(&args, Scenario::Peers) {
        Some(peers::prepare(&args).await?)
    } else {
        None
    };
    let server = Server::from_database_url(&args.database.database_url)?;
    let client = nats::connect(
        &args.nats,
        "codigo-loadtest-bench",
        InitialConnect::FailFast,
    )
    .await?;
    let logs = std::env::temp_dir().join(format!("codigo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|source| LoadError::Write {
        path: logs.clone(),
        source,
    })?;
    let ctx = Ctx {
        args: &args,
        bins,
        server: server.clone(),
        client: client.clone(),
        http: reqwest::Client::new(),
        logs: logs.clone(),
        token: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        replicas: 1,
        nats_pids: None,
    };
    let started = OffsetDateTime::now_utc();
    let outcome = tokio::select! {
        outcome = scenarios(&ctx) => outcome,
        () = crate::error::interrupted() => Err(LoadError::Interrupted),
    };
    // Processes of an interrupted or failed repetition were killed when it was dropped; its
    // namespace and database are removed here.
    server
        .destroy_all(&async_nats::jetstream::new(client.clone()))
        .await;
    let results = match outcome {
        Ok(results) => results,
        Err(error) => {
            eprintln!("benchmark failed; process logs kept in {}", logs.display());
            return Err(error);
        }
    };
    let clustered = if args.cluster > 0 {
        let outcome = tokio::select! {
            outcome = on_cluster(&ctx, &logs) => outcome,
            () = crate::error::interrupted() => Err(LoadError::Interrupted),
        };
        match outcome {
            Ok(clustered) => Some(clustered),
            Err(error) => {
                eprintln!("benchmark failed; process logs kept in {}", logs.display());
                return Err(error);
            }
        }
    } else {
        None
    };
    let machine = Machine::probe(&ctx).await;
    let finished = OffsetDateTime::now_utc();
    write_report(
        &args,
        &machine,
        &results,
        clustered.as_ref(),
        peer.as_ref(),
        started,
        finished,
    )?;
    let peer_failed = results
        .peers
        .iter()
        .chain(clustered.iter().flat_map(|c| &c.results.peers))
        .any(PeerRun::failed);
    if peer_failed {
        eprintln!(
            "a Graphile Worker run failed (see the report); its log is kept in {}",
            logs.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&logs);
    }
    println!("wrote {} and {}", args.out.display(), args.plot.display());
    Ok(())
}

fn wanted(args: &BenchArgs, scenario: Scenario) -> bool {
    if args.scenarios.is_empty() {
        scenario.by_default()
    } else {
        args.scenarios.contains(&scenario)
    }
}

async fn scenarios(ctx: &Ctx<'_>) -> Result<Results, LoadError> {
    let args = ctx.args;
    let mut results = Results::default();
    let reps = args.reps.max(1);
    for rep in 1..=reps {
        let step = |what: &str| eprintln!("[{rep}/{reps}] {what}");
        if wanted(args, Scenario::Baseline) {
            settle(ctx).await;
            step("bare baseline");
            let spec = BaselineSpec {
                jobs: args.baseline_jobs.unwrap_or(args.drain_jobs).max(1),
                workers: args.baseline_workers,
                fetch_batch: args.baseline_fetch,
                publish_window: 4096,
                accounts: args.accounts,
                job_bytes: args.job_bytes,
                replicas: ctx.replicas,
            };
            let report = match baseline::run(&spec, &ctx.client, &ctx.server).await {
                Err(stalled @ LoadError::BaselineStalled { .. }) => {
                    eprintln!("      {stalled}; measuring again in a fresh namespace");
                    settle(ctx).await;
                    baseline::run(&spec, &ctx.client, &ctx.server).await?
                }
                other => other?,
            };
            results.baseline.push(report);
        }
        let duration = Some(Duration::from_secs(args.duration_secs.max(1)));
        let sustained = |ingest: Ingest, concurrency: usize| RunSpec {
            ingest,
            load: Load::Closed { concurrency },
            duration,
            jobs: None,
            batch_size: args.batch_size,
            accounts: args.accounts,
            job_bytes: args.job_bytes,
            tenant: "bench".into(),
            max_in_flight: concurrency.max(1),
            max_backlog: Some(args.max_backlog),
            e2e: true,
            drain_timeout: Duration::from_secs(300),
            progress: true,
        };
        let rates: [(Scenario, &str, Ingest, usize, SamplesOf); 3] = [
            (
                Scenario::MaxBatch,
                "sustained rate, batch ingest",
                Ingest::Batch,
                args.batch_clients,
                |r| &mut r.max_batch,
            ),
            (
                Scenario::MaxSingle,
                "sustained rate, single POST",
                Ingest::Single,
                args.single_clients,
                |r| &mut r.max_single,
            ),
            (
                Scenario::MaxNats,
                "sustained rate, direct to JetStream",
                Ingest::Nats,
                args.nats_clients,
                |r| &mut r.max_nats,
            ),
        ];
        for (scenario, what, ingest, clients, samples) in rates {
            if wanted(args, scenario) {
                settle(ctx).await;
                step(what);
                let sample = load_rep(ctx, &sustained(ingest, clients)).await?;
                samples(&mut results).push(sample);
            }
        }
        if wanted(args, Scenario::Latency) {
            let measured = results
                .max_single
                .last()
                .and_then(|s| s.report.throughput.e2e_jobs_per_sec);
            let rate = args
                .latency_rate
                .or(measured.map(|r| r / 2.0))
                .unwrap_or(100.0)
                .max(1.0);
            settle(ctx).await;
            step(&format!(
                "latency, open loop at {rate:.0} jobs/s (single POST)"
            ));
            let spec = RunSpec {
                load: Load::Open { rate },
                max_in_flight: 10_000,
                max_backlog: None,
                ..sustained(Ingest::Single, 1)
            };
            results.latency.push(load_rep(ctx, &spec).await?);
            results.latency_rates.push(rate);
        }
        if wanted(args, Scenario::Delayed) {
            settle(ctx).await;
            step("delayed jobs beside the sustained batch ingest");
            let load = sustained(Ingest::Batch, args.batch_clients);
            results.delayed.push(delayed_rep(ctx, &load).await?);
        }
        if wanted(args, Scenario::Drain) {
            settle(ctx).await;
            step(&format!("drain {} jobs, one consumer", args.drain_jobs));
            results.drain.push(drain_rep(ctx, 1).await?);
        }
        if wanted(args, Scenario::DrainTwo) {
            settle(ctx).await;
            step(&format!("drain {} jobs, two consumers", args.drain_jobs));
            results.drain_two.push(drain_rep(ctx, 2).await?);
        }
        if wanted(args, Scenario::Peers) {
            settle(ctx).await;
            step(&format!(
                "Graphile Worker batch jobs, {} payloads",
                args.drain_jobs
            ));
            results.peers.push(graphile_rep(ctx).await?);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(flags: &[&str]) -> BenchArgs {
        let argv = ["bench"].iter().chain(flags).copied();
        Cli::try_parse_from(argv).expect("valid flags").bench
    }

    #[test]
    fn the_peer_runs_only_when_named() {
        let all = args(&[]);
        assert!(wanted(&all, Scenario::Drain) && wanted(&all, Scenario::Baseline));
        assert!(!wanted(&all, Scenario::Peers));
        let named = args(&["--scenarios", "baseline,drain,peers"]);
        assert!(wanted(&named, Scenario::Peers) && wanted(&named, Scenario::Drain));
        assert!(!wanted(&named, Scenario::MaxBatch));
    }
}
