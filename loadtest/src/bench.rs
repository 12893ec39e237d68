//! `codigo-loadtest bench` (what `make bench` runs): the standard scenarios, each repeated,
//! against the release binaries started as processes, every repetition in a namespace and
//! database of its own; then BENCHMARKS.md and its latency plot.
//!
//! Repetitions are the outer loop (every scenario once, then again), so that anything else
//! the machine does during the benchmark spreads over all scenarios instead of skewing one.
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use codigo_common::config::{DatabaseArgs, NatsArgs};
use codigo_common::nats::{self, InitialConnect};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::baseline::{self, BaselineReport, BaselineSpec};
use crate::driver::Load;
use crate::e2e::Backlog;
use crate::error::LoadError;
use crate::procs::{cpu_time, free_port, pids_of, run_to_end, Proc, Rss};
use crate::run::{self, Endpoints, Report, RunSpec};
use crate::scratch::{Scratch, Server};
use crate::target::Ingest;
use codigo_chaos::cluster::{Cluster, Profile};

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
    /// A full stream drained by one consumer started afterwards (also: time to first ack).
    Drain,
    /// The same drained by two consumers.
    DrainTwo,
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
    /// Scenarios to run, comma separated (default: all).
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

struct Bins {
    producer: PathBuf,
    consumer: PathBuf,
    ctl: PathBuf,
}

impl Bins {
    fn find(dir: &Path) -> Result<Self, LoadError> {
        let bin = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(LoadError::Invalid(format!(
                    "{} not found; run `cargo build --release --bins` (or `make bench`), or point --bin-dir at the binaries",
                    path.display()
                )))
            }
        };
        Ok(Self {
            producer: bin("codigo-producer")?,
            consumer: bin("codigo-consumer")?,
            ctl: bin("codigo-ctl")?,
        })
    }
}

struct Ctx<'a> {
    args: &'a BenchArgs,
    bins: Bins,
    server: Server,
    client: async_nats::Client,
    http: reqwest::Client,
    logs: PathBuf,
    token: String,
    /// Replicas of every stream: 1 on the single server, the profile's on the cluster.
    replicas: usize,
    /// The cluster's servers, when the scenarios run on one.
    nats_pids: Option<Vec<u32>>,
}

/// One repetition's services: a scratch namespace and database, set up by `codigo-ctl
/// setup`, and the processes started on it.
struct Stack {
    scratch: Scratch,
    producer: Option<Proc>,
    producer_url: String,
    consumers: Vec<Proc>,
    pool: PgPool,
}

impl Stack {
    async fn new(ctx: &Ctx<'_>) -> Result<Self, LoadError> {
        let scratch = ctx.server.create().await?;
        run_to_end(
            &ctx.bins.ctl,
            &["setup"],
            &env(ctx, &scratch, &[], &[]),
            Duration::from_secs(60),
        )
        .await?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&scratch.database_url)
            .await
            .map_err(|e| LoadError::postgres("connecting to the benchmark database", e))?;
        Ok(Self {
            scratch,
            producer: None,
            producer_url: String::new(),
            consumers: Vec::new(),
            pool,
        })
    }

    async fn start_producer(&mut self, ctx: &Ctx<'_>) -> Result<(), LoadError> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let keys = format!("bench:{}", ctx.token);
        let mut proc = Proc::spawn(
            "codigo-producer",
            &ctx.bins.producer,
            &[],
            &env(
                ctx,
                &self.scratch,
                &[
                    ("CODIGO_HTTP_ADDR", &addr),
                    ("CODIGO_API_KEYS", &keys),
                    ("CODIGO_RATE_LIMIT_PER_KEY", "0"),
                ],
                &ctx.args.producer_env,
            ),
            &ctx.logs
                .join(format!("{}-producer.log", self.scratch.names.namespace())),
        )?;
        self.producer_url = format!("http://{addr}");
        proc.wait_ready(
            &ctx.http,
            &format!("{}/readyz", self.producer_url),
            Duration::from_secs(30),
        )
        .await?;
        self.producer = Some(proc);
        Ok(())
    }

    /// Starts a consumer; returns when the process was started (not when it is ready).
    fn spawn_consumer(&mut self, ctx: &Ctx<'_>) -> Result<String, LoadError> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let n = self.consumers.len() + 1;
        let proc = Proc::spawn(
            "codigo-consumer",
            &ctx.bins.consumer,
            &[],
            &env(
                ctx,
                &self.scratch,
                &[
                    ("CODIGO_HTTP_ADDR", &addr),
                    ("CODIGO_JOB_TYPES", "ledger.post"),
                ],
                &ctx.args.consumer_env,
            ),
            &ctx.logs.join(format!(
                "{}-consumer-{n}.log",
                self.scratch.names.namespace()
            )),
        )?;
        self.consumers.push(proc);
        Ok(format!("http://{addr}/readyz"))
    }

    async fn start_consumer(&mut self, ctx: &Ctx<'_>) -> Result<(), LoadError> {
        let ready = self.spawn_consumer(ctx)?;
        if let Some(proc) = self.consumers.last_mut() {
            proc.wait_ready(&ctx.http, &ready, Duration::from_secs(30))
                .await?;
        }
        Ok(())
    }

    fn endpoints(&self, ctx: &Ctx<'_>) -> Endpoints {
        Endpoints {
            producer_url: self.producer_url.clone(),
            api_key: Some(ctx.token.clone()),
            nats: ctx.client.clone(),
            names: self.scratch.names.clone(),
            pool: Some(self.pool.clone()),
        }
    }

    fn check_alive(&mut self) -> Result<(), LoadError> {
        for proc in self.producer.iter_mut().chain(self.consumers.iter_mut()) {
            proc.check_alive()?;
        }
        Ok(())
    }

    fn producer_rss(&self) -> Rss {
        self.producer.as_ref().map(Proc::rss).unwrap_or_default()
    }

    /// The largest consumer's memory.
    fn consumer_rss(&self) -> Rss {
        self.consumers
            .iter()
            .map(Proc::rss)
            .max_by_key(|r| r.peak_kib)
            .unwrap_or_default()
    }

    /// Stops every process (SIGTERM, then SIGKILL) and removes the namespace and database.
    async fn teardown(self, ctx: &Ctx<'_>) {
        let grace = Duration::from_secs(30);
        let mut stops = Vec::new();
        if let Some(producer) = self.producer {
            stops.push(producer.stop(grace));
        }
        for consumer in self.consumers {
            stops.push(consumer.stop(grace));
        }
        futures::future::join_all(stops).await;
        self.pool.close().await;
        ctx.server
            .destroy(
                &self.scratch,
                &async_nats::jetstream::new(ctx.client.clone()),
            )
            .await;
    }
}

/// The children's environment: our NATS settings, the scratch namespace and database, and
/// the services' shipped log settings (JSON at info: spans and all, as deployed).
fn env(
    ctx: &Ctx<'_>,
    scratch: &Scratch,
    extra: &[(&str, &str)],
    overrides: &[(String, String)],
) -> Vec<(String, String)> {
    let mut vars = vec![
        ("NATS_URL".to_owned(), ctx.args.nats.nats_url.clone()),
        ("DATABASE_URL".to_owned(), scratch.database_url.clone()),
        (
            "CODIGO_NAMESPACE".to_owned(),
            scratch.names.namespace().to_owned(),
        ),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
        (
            "CODIGO_STREAM_REPLICAS".to_owned(),
            ctx.replicas.to_string(),
        ),
        // File storage reserves a stream's byte limit up front (8 GiB by default): ask only
        // for what the benchmark stores, so that it fits beside other streams.
        (
            "CODIGO_STREAM_MAX_BYTES".to_owned(),
            ctx.args
                .drain_jobs
                .saturating_mul(4096)
                .max(1 << 30)
                .to_string(),
        ),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    vars.extend(overrides.iter().cloned());
    vars
}

/// One repetition of a rate or latency scenario.
#[derive(Debug, Clone)]
struct LoadSample {
    report: Report,
    producer: Rss,
    consumer: Rss,
    cpu: Cpu,
}

/// One repetition of a drain scenario.
#[derive(Debug, Clone, Copy, Serialize)]
struct DrainSample {
    jobs: u64,
    /// Consumer process start to the last commit.
    secs: f64,
    jobs_per_sec: f64,
    /// Consumer process start to its first ack.
    first_ack_ms: f64,
    consumer: Rss,
    #[serde(skip)]
    cpu: Cpu,
}

/// CPU time used by each part of the system over a repetition.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    loadgen: Duration,
    producer: Duration,
    consumer: Duration,
    nats: Duration,
    /// The backends serving this repetition's database (Postgres' shared WAL writer and
    /// checkpointer are not included).
    postgres: Duration,
}

impl Cpu {
    fn now(ctx: &Ctx<'_>, stack: &Stack) -> Self {
        let sum = |pids: &[u32]| pids.iter().filter_map(|p| cpu_time(*p)).sum::<Duration>();
        let consumers: Vec<u32> = stack.consumers.iter().map(Proc::pid).collect();
        Self {
            loadgen: cpu_time(std::process::id()).unwrap_or_default(),
            producer: stack
                .producer
                .as_ref()
                .and_then(|p| cpu_time(p.pid()))
                .unwrap_or_default(),
            consumer: sum(&consumers),
            nats: sum(&nats_pids(ctx)),
            postgres: sum(&pids_of("postgres", &[&stack.scratch.database])),
        }
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            loadgen: self.loadgen.saturating_sub(earlier.loadgen),
            producer: self.producer.saturating_sub(earlier.producer),
            consumer: self.consumer.saturating_sub(earlier.consumer),
            nats: self.nats.saturating_sub(earlier.nats),
            postgres: self.postgres.saturating_sub(earlier.postgres),
        }
    }

    fn parts(self) -> [Duration; 5] {
        [
            self.loadgen,
            self.producer,
            self.consumer,
            self.nats,
            self.postgres,
        ]
    }
}

/// The nats-server at NATS_URL's port (the only one, when its port is not on its command
/// line).
fn nats_pids(ctx: &Ctx<'_>) -> Vec<u32> {
    if let Some(pids) = &ctx.nats_pids {
        return pids.clone();
    }
    let first = ctx.args.nats.nats_url.split(',').next().unwrap_or_default();
    let port = first
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or(4222);
    let mut pids = pids_of("nats-server", &[&format!("-p {port}")]);
    pids.extend(pids_of("nats-server", &[&format!("--port {port}")]));
    if pids.is_empty() {
        let all = pids_of("nats-server", &[]);
        if all.len() == 1 {
            return all;
        }
    }
    pids
}

#[derive(Default)]
struct Results {
    baseline: Vec<BaselineReport>,
    max_batch: Vec<LoadSample>,
    max_single: Vec<LoadSample>,
    max_nats: Vec<LoadSample>,
    latency: Vec<LoadSample>,
    latency_rates: Vec<f64>,
    drain: Vec<DrainSample>,
    drain_two: Vec<DrainSample>,
}

pub async fn run(args: BenchArgs) -> Result<(), LoadError> {
    let bins = Bins::find(&args.bin_dir)?;
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
        () = crate::cli::interrupted() => Err(LoadError::Interrupted),
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
            () = crate::cli::interrupted() => Err(LoadError::Interrupted),
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
        started,
        finished,
    )?;
    let _ = std::fs::remove_dir_all(&logs);
    println!("wrote {} and {}", args.out.display(), args.plot.display());
    Ok(())
}

/// The scenarios on the production profile: what ran, and on what.
struct Clustered {
    results: Results,
    servers: usize,
    profile: Profile,
}

/// Starts a local cluster in the production profile (deploy/nats/cluster.conf), runs every
/// scenario on it, bare baseline included, and stops it.
async fn on_cluster(ctx: &Ctx<'_>, logs: &Path) -> Result<Clustered, LoadError> {
    let servers = ctx.args.cluster;
    if servers < 3 {
        return Err(LoadError::Invalid(format!(
            "BENCH_CLUSTER={servers}: a JetStream cluster needs at least 3 servers (0 skips it)"
        )));
    }
    let profile = Profile::shared();
    let dir = logs.join("cluster");
    std::fs::create_dir_all(&dir).map_err(|source| LoadError::Write {
        path: dir.clone(),
        source,
    })?;
    eprintln!(
        "production profile: {servers} nats-servers, R{} streams, sync_interval {}",
        profile.stream_replicas, profile.sync_interval
    );
    let cluster = Cluster::start(&dir, servers, false)
        .await
        .map_err(|e| LoadError::Invalid(format!("starting the benchmark cluster: {e}")))?;
    let mut args = ctx.args.clone();
    args.nats.nats_url = cluster.urls();
    let client = nats::connect(
        &args.nats,
        "codigo-loadtest-bench-cluster",
        InitialConnect::FailFast,
    )
    .await?;
    let cluster_ctx = Ctx {
        args: &args,
        bins: Bins::find(&args.bin_dir)?,
        server: ctx.server.clone(),
        client: client.clone(),
        http: ctx.http.clone(),
        logs: logs.to_owned(),
        token: ctx.token.clone(),
        replicas: profile.stream_replicas.min(servers),
        nats_pids: Some(cluster.pids()),
    };
    let outcome = scenarios(&cluster_ctx).await;
    ctx.server
        .destroy_all(&async_nats::jetstream::new(client.clone()))
        .await;
    drop(cluster);
    Ok(Clustered {
        results: outcome?,
        servers,
        profile,
    })
}

fn wanted(args: &BenchArgs, scenario: Scenario) -> bool {
    args.scenarios.is_empty() || args.scenarios.contains(&scenario)
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
            results
                .baseline
                .push(baseline::run(&spec, &ctx.client, &ctx.server).await?);
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
        if wanted(args, Scenario::MaxBatch) {
            settle(ctx).await;
            step("sustained rate, batch ingest");
            results
                .max_batch
                .push(load_rep(ctx, &sustained(Ingest::Batch, args.batch_clients)).await?);
        }
        if wanted(args, Scenario::MaxSingle) {
            settle(ctx).await;
            step("sustained rate, single POST");
            results
                .max_single
                .push(load_rep(ctx, &sustained(Ingest::Single, args.single_clients)).await?);
        }
        if wanted(args, Scenario::MaxNats) {
            settle(ctx).await;
            step("sustained rate, direct to JetStream");
            results
                .max_nats
                .push(load_rep(ctx, &sustained(Ingest::Nats, args.nats_clients)).await?);
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
    }
    Ok(results)
}

/// Lets the previous step's after-effects finish before the next measurement starts, so that
/// none pays for the one before it: Postgres checkpoints what the last run wrote, and NATS
/// finishes removing its streams' files. Waits for the machine's CPUs to fall under 15 % busy
/// (over half a second), for 30 s at most.
async fn settle(ctx: &Ctx<'_>) {
    ctx.server.checkpoint().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let Some(before) = cpu_times() else { return };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(after) = cpu_times() else { return };
        let total = after.0.saturating_sub(before.0);
        let idle = after.1.saturating_sub(before.1);
        #[allow(clippy::cast_precision_loss)]
        let busy = 1.0 - idle as f64 / total.max(1) as f64;
        if busy < 0.15 {
            return;
        }
    }
}

/// The machine's CPU time so far, in clock ticks: (all, idle + iowait), from `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((fields.iter().sum(), idle))
}

/// Starts producer (for HTTP ingest) and one consumer, runs the load, reads memory.
async fn load_rep(ctx: &Ctx<'_>, spec: &RunSpec) -> Result<LoadSample, LoadError> {
    let mut stack = Stack::new(ctx).await?;
    let sample: Result<LoadSample, LoadError> = async {
        if spec.ingest != Ingest::Nats {
            stack.start_producer(ctx).await?;
        }
        stack.start_consumer(ctx).await?;
        let before = Cpu::now(ctx, &stack);
        let report = run::run(spec, &stack.endpoints(ctx)).await?;
        let cpu = Cpu::now(ctx, &stack).since(before);
        stack.check_alive()?;
        Ok(LoadSample {
            producer: stack.producer_rss(),
            consumer: stack.consumer_rss(),
            report,
            cpu,
        })
    }
    .await;
    stack.teardown(ctx).await;
    let sample = sample?;
    let r = &sample.report;
    eprintln!(
        "      sent {} accepted {} completed {}; ingest {:.0} jobs/s, e2e {:.0} jobs/s, ingest p99 {:.1} ms, e2e p99 {:.1} ms",
        r.jobs.sent,
        r.jobs.accepted,
        r.jobs.completed,
        r.throughput.ingest_jobs_per_sec,
        r.throughput.e2e_jobs_per_sec.unwrap_or(0.0),
        r.ingest_latency.map_or(0.0, |l| l.p99_ms),
        r.e2e_latency.map_or(0.0, |l| l.p99_ms),
    );
    Ok(sample)
}

/// Fills the stream with no consumer running, then starts `consumers` consumers and times
/// the first ack and the last commit from the first process start.
async fn drain_rep(ctx: &Ctx<'_>, consumers: usize) -> Result<DrainSample, LoadError> {
    let jobs = ctx.args.drain_jobs.max(1);
    let mut stack = Stack::new(ctx).await?;
    let sample: Result<DrainSample, LoadError> = async {
        let fill = RunSpec {
            ingest: Ingest::Nats,
            load: Load::Closed { concurrency: 1024 },
            duration: None,
            jobs: Some(jobs),
            batch_size: 1,
            accounts: ctx.args.accounts,
            job_bytes: ctx.args.job_bytes,
            tenant: "bench".into(),
            max_in_flight: 1024,
            max_backlog: None,
            e2e: false,
            drain_timeout: Duration::ZERO,
            progress: true,
        };
        let filled = run::run(&fill, &stack.endpoints(ctx)).await?;
        if filled.jobs.accepted != jobs {
            return Err(LoadError::Invalid(format!(
                "filling the stream stored {} of {jobs} jobs: {:?}",
                filled.jobs.accepted, filled.errors
            )));
        }
        // Acks are publishes to $JS.ACK.<stream>.…: watching them shows the very first one.
        let mut acks = ctx
            .client
            .subscribe(format!("$JS.ACK.{}.>", stack.scratch.names.jobs_stream()))
            .await
            .map_err(|e| LoadError::jetstream("watching acks", e))?;
        ctx.client
            .flush()
            .await
            .map_err(|e| LoadError::jetstream("watching acks", e))?;
        let js = async_nats::jetstream::new(ctx.client.clone());
        let backlog = Backlog::watch(
            &js,
            &stack.scratch.names.jobs_stream(),
            Duration::from_millis(100),
        )
        .await?;

        let before = Cpu::now(ctx, &stack);
        let spawned_at = OffsetDateTime::now_utc();
        let spawned = Instant::now();
        for _ in 0..consumers {
            stack.spawn_consumer(ctx)?;
        }
        let first_ack = loop {
            let next = tokio::time::timeout(Duration::from_secs(60), acks.next())
                .await
                .map_err(|_| {
                    LoadError::Invalid("no ack within 60 s of starting the consumer".into())
                })?;
            match next {
                // A plain ack has an empty body (or +ACK); progress and naks do not count.
                Some(m) if m.payload.is_empty() || m.payload.as_ref() == b"+ACK" => {
                    break spawned.elapsed();
                }
                Some(_) => {}
                None => return Err(LoadError::Invalid("the ack subscription closed".into())),
            }
        };
        let _ = acks.unsubscribe().await;

        let deadline = Instant::now() + Duration::from_secs(600) + Duration::from_millis(jobs * 2);
        loop {
            stack.check_alive()?;
            if backlog.get() == Some(0) {
                let (done, last): (i64, Option<OffsetDateTime>) = sqlx::query_as(
                    "SELECT count(*), max(finished_at) FROM jobs WHERE status = 'succeeded'",
                )
                .fetch_one(&stack.pool)
                .await
                .map_err(|e| LoadError::postgres("counting drained jobs", e))?;
                if u64::try_from(done).unwrap_or(0) >= jobs {
                    let cpu = Cpu::now(ctx, &stack).since(before);
                    let secs = last.map_or(0.0, |l| (l - spawned_at).as_seconds_f64());
                    #[allow(clippy::cast_precision_loss)]
                    return Ok(DrainSample {
                        jobs,
                        secs,
                        jobs_per_sec: jobs as f64 / secs.max(1e-9),
                        first_ack_ms: first_ack.as_secs_f64() * 1000.0,
                        consumer: stack.consumer_rss(),
                        cpu,
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(LoadError::Invalid(format!(
                    "the consumers did not drain {jobs} jobs in time"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    .await;
    stack.teardown(ctx).await;
    let sample = sample?;
    eprintln!(
        "      drained {} jobs in {:.1} s: {:.0} jobs/s; first ack {:.0} ms after start",
        sample.jobs, sample.secs, sample.jobs_per_sec, sample.first_ack_ms
    );
    Ok(sample)
}

/// Where the numbers were taken.
struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    kernel: String,
    nats_version: String,
    postgres_version: String,
    postgres_settings: Vec<(String, String)>,
    commit: String,
}

impl Machine {
    async fn probe(ctx: &Ctx<'_>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        #[allow(clippy::cast_precision_loss)]
        let memory_gib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.to_owned());
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let dirty = std::process::Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
        let commit = if dirty {
            format!("`{commit}` with uncommitted changes")
        } else {
            format!("`{commit}`")
        };
        let (postgres_version, postgres_settings) = postgres_facts(&ctx.server).await;
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib,
            kernel,
            nats_version: ctx.client.server_info().version,
            postgres_version,
            postgres_settings,
            commit,
        }
    }
}

async fn postgres_facts(server: &Server) -> (String, Vec<(String, String)>) {
    let Ok(pool) = PgPoolOptions::new()
        .max_connections(1)
        .connect(&server.database_url("postgres"))
        .await
    else {
        return ("unknown".into(), Vec::new());
    };
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|_| "unknown".into());
    let names = [
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "full_page_writes",
        "shared_buffers",
        "max_connections",
        "max_wal_size",
        "checkpoint_timeout",
    ];
    let settings: Vec<(String, String)> =
        sqlx::query_as("SELECT name, current_setting(name) FROM unnest($1::text[]) AS name")
            .bind(&names[..])
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
    pool.close().await;
    (version, settings)
}

/// Median, minimum and maximum.
fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
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

fn num(value: f64) -> String {
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
fn cell(values: &[f64]) -> String {
    match spread(values) {
        Some((median, min, max)) if values.len() > 1 => {
            format!("{} ({}–{})", num(median), num(min), num(max))
        }
        Some((median, _, _)) => num(median),
        None => "not run".into(),
    }
}

fn median(values: &[f64]) -> Option<f64> {
    spread(values).map(|s| s.0)
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "—",
    }
}

fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{:.0} %", 100.0 * v))
}

fn mib(kib: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let kib = kib as f64;
    kib / 1024.0
}

/// Relative path from the report's directory to the plot, for the Markdown link.
fn relative_link(report: &Path, plot: &Path) -> String {
    let base = report.parent().unwrap_or_else(|| Path::new(""));
    plot.strip_prefix(base)
        .unwrap_or(plot)
        .to_string_lossy()
        .replace('\\', "/")
}

fn write_report(
    args: &BenchArgs,
    machine: &Machine,
    results: &Results,
    clustered: Option<&Clustered>,
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
         out the production-profile cluster. The drain scenarios use {} \
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
    let _ = writeln!(w, "| CPU | {} ({} cores) |", machine.cpu, machine.cores);
    let _ = writeln!(w, "| memory | {:.0} GiB |", machine.memory_gib);
    let _ = writeln!(w, "| OS | {} |", machine.kernel);
    let _ = writeln!(
        w,
        "| NATS | nats-server {}, JetStream file storage, 1 replica, server defaults (fsync of the \
         store every 2 min, not per message) |",
        machine.nats_version
    );
    let settings = machine
        .postgres_settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        w,
        "| PostgreSQL | {} ({settings}) |",
        machine.postgres_version
    );
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
    }

    if !results.baseline.is_empty() {
        let b = &results.baseline;
        let col = |f: fn(&BaselineReport) -> f64| -> Vec<f64> { b.iter().map(f).collect() };
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
        let _ = writeln!(
            w,
            "| JetStream publish, pipelined acks, `Nats-Msg-Id` | {} |",
            cell(&col(|r| r.publish_per_sec))
        );
        let _ = writeln!(
            w,
            "| pull consume + ack (full stream) | {} |",
            cell(&col(|r| r.consume_ack_per_sec))
        );
        let _ = writeln!(
            w,
            "| bare pipeline while publishing | {} |",
            cell(&col(|r| r.pipeline_live_per_sec))
        );
        let _ = writeln!(
            w,
            "| bare pipeline draining a full stream | {} |",
            cell(&col(|r| r.pipeline_drain_per_sec))
        );
        let _ = writeln!(
            w,
            "| the same drain with the statements run once per job (one transaction per batch still; a quarter of the jobs) | {} |\n",
            cell(&col(|r| r.rowwise_drain_per_sec))
        );
    }

    let rss_rows: Vec<(&str, Vec<f64>)> = vec![
        (
            "producer, sustained batch ingest",
            results
                .max_batch
                .iter()
                .map(|s| mib(s.producer.peak_kib))
                .collect(),
        ),
        (
            "producer, sustained single POST",
            results
                .max_single
                .iter()
                .map(|s| mib(s.producer.peak_kib))
                .collect(),
        ),
        (
            "consumer, sustained batch ingest",
            results
                .max_batch
                .iter()
                .map(|s| mib(s.consumer.peak_kib))
                .collect(),
        ),
        (
            "consumer, sustained single POST",
            results
                .max_single
                .iter()
                .map(|s| mib(s.consumer.peak_kib))
                .collect(),
        ),
        (
            "consumer, draining a full stream",
            results
                .drain
                .iter()
                .map(|s| mib(s.consumer.peak_kib))
                .collect(),
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
         - **Memory**: VmHWM from `/proc/<pid>/status` at the end of each repetition.\n\
         - **Between measurements**: Postgres runs a `CHECKPOINT` and the benchmark waits (30 s \
         at most) for the machine's CPUs to fall under 15 % busy, so that no measurement pays for \
         the writes and file removals of the one before.\n",
        args.duration_secs,
        args.max_backlog,
        num_int(args.drain_jobs),
    );

    std::fs::write(&args.out, md).map_err(|source| LoadError::Write {
        path: args.out.clone(),
        source,
    })
}

/// CPU, completed jobs and seconds of one repetition.
type CpuSample = (Cpu, u64, f64);

fn load_cpu(samples: &[LoadSample]) -> Vec<CpuSample> {
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

fn num_or_dash(value: Option<f64>) -> String {
    match value {
        Some(v) if v > 0.0 => num(v),
        _ => "—".into(),
    }
}

fn num_int(value: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    num(value as f64)
}

fn write_plot(
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

/// The results table of one server set-up: every scenario against the bare baseline of the
/// same run and set-up.
fn results_table(w: &mut String, args: &BenchArgs, results: &Results, latency_target_ms: f64) {
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
        assert_eq!(pct(ratio(Some(1.0), Some(4.0))), "25 %");
        assert_eq!(pct(ratio(Some(1.0), Some(0.0))), "—");
    }

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
