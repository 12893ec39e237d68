//! Flags and environment of `codigo-loadtest`, and the `run` command (the default).
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use codigo_common::config::{DatabaseArgs, NatsArgs};
use codigo_common::nats::{self, InitialConnect};
use codigo_common::Names;

use crate::baseline::{self, BaselineSpec};
use crate::driver::Load;
use crate::error::{interrupted, LoadError};
use crate::plot;
use crate::run::{self, Endpoints, RunSpec};
use crate::scratch::Server;
use crate::target::Ingest;

/// Load generator and benchmark of the Codigo pipeline.
#[derive(Debug, Parser)]
#[command(
    name = "codigo-loadtest",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  codigo-loadtest --ingest batch --concurrency 8 --duration-secs 30\n  \
                  codigo-loadtest --ingest single --rate 500 --plot latency.svg --json\n  \
                  codigo-loadtest --ingest nats --jobs 100000 --baseline\n  \
                  codigo-loadtest bench   (what `make bench` runs)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the standard scenarios against release binaries started as processes, each in a
    /// namespace and database of its own, and rewrite BENCHMARKS.md.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// How jobs enter: `single` (POST /v1/jobs), `batch` (POST /v1/jobs/batch) or `nats`
    /// (straight to JetStream, with the producer's envelope and headers).
    #[arg(long, env = "CODIGO_LOADTEST_INGEST", value_enum, default_value_t = Ingest::Batch)]
    pub ingest: Ingest,
    /// Open loop at this many jobs per second (latency counted from each request's due
    /// time). Without it the run is a closed loop of --concurrency clients.
    #[arg(long, env = "CODIGO_LOADTEST_RATE")]
    pub rate: Option<f64>,
    /// Closed loop: clients, each with one request outstanding.
    #[arg(long, env = "CODIGO_LOADTEST_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds of sending.
    #[arg(long, env = "CODIGO_LOADTEST_DURATION_SECS", default_value_t = 10)]
    pub duration_secs: u64,
    /// Stop after this many jobs (whichever comes first with the duration).
    #[arg(long, env = "CODIGO_LOADTEST_JOBS")]
    pub jobs: Option<u64>,
    /// Jobs per request with `--ingest batch` (the producer takes up to 1000).
    #[arg(long, env = "CODIGO_LOADTEST_BATCH_SIZE", default_value_t = 100)]
    pub batch_size: u64,
    /// Accounts the ledger.post jobs are spread over.
    #[arg(long, env = "CODIGO_LOADTEST_ACCOUNTS", default_value_t = 1000)]
    pub accounts: u64,
    /// Bytes JetStream stores per job (envelope and headers), reached with memo padding.
    #[arg(long, env = "CODIGO_LOADTEST_JOB_BYTES", default_value_t = 512)]
    pub job_bytes: usize,
    /// Producer base URL for HTTP ingest.
    #[arg(
        long,
        env = "CODIGO_PRODUCER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub producer_url: String,
    /// API token for the producer (omit when it runs with CODIGO_AUTH=disabled).
    #[arg(long, env = "CODIGO_LOADTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Tenant written into envelopes published with `--ingest nats`.
    #[arg(long, env = "CODIGO_LOADTEST_TENANT", default_value = "loadtest")]
    pub tenant: String,
    /// Open loop: most requests outstanding; later requests wait, and their latency (from
    /// the due time) shows it. With `--ingest nats`, also the publishes awaiting acks.
    #[arg(long, env = "CODIGO_LOADTEST_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Closed loop: pause while the work stream holds more jobs than this, so that the
    /// throughput is what the whole pipeline sustains.
    #[arg(long, env = "CODIGO_LOADTEST_MAX_BACKLOG")]
    pub max_backlog: Option<u64>,
    /// Seconds to wait, after the last request, for the pipeline to finish the jobs.
    #[arg(
        long,
        env = "CODIGO_LOADTEST_DRAIN_TIMEOUT_SECS",
        default_value_t = 120
    )]
    pub drain_timeout_secs: u64,
    /// Do not wait for the jobs' rows: no end-to-end numbers, no database needed.
    #[arg(long)]
    pub no_e2e: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Draw the latency distribution into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Also measure the bare async-nats + sqlx baseline (in a namespace and database of its
    /// own) and report this run's throughput as a share of it.
    #[arg(long)]
    pub baseline: bool,
    /// Jobs per baseline measurement.
    #[arg(long, env = "CODIGO_LOADTEST_BASELINE_JOBS", default_value_t = 20_000)]
    pub baseline_jobs: u64,
    /// Concurrent fetch → transaction → ack loops of the bare pipeline.
    #[arg(long, env = "CODIGO_LOADTEST_BASELINE_WORKERS", default_value_t = 4)]
    pub baseline_workers: usize,
    /// Messages per fetch (and per transaction) of the bare pipeline.
    #[arg(long, env = "CODIGO_LOADTEST_BASELINE_FETCH", default_value_t = 256)]
    pub baseline_fetch: usize,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

impl RunArgs {
    pub fn spec(&self, progress: bool) -> Result<RunSpec, LoadError> {
        let load = match self.rate {
            Some(rate) if rate > 0.0 && rate.is_finite() => Load::Open { rate },
            Some(_) => {
                return Err(LoadError::Invalid(
                    "--rate must be a positive number of jobs per second".into(),
                ))
            }
            None => Load::Closed {
                concurrency: self.concurrency.max(1),
            },
        };
        if self.batch_size == 0 || self.accounts == 0 {
            return Err(LoadError::Invalid(
                "--batch-size and --accounts must be at least 1".into(),
            ));
        }
        Ok(RunSpec {
            ingest: self.ingest,
            load,
            duration: Some(Duration::from_secs(self.duration_secs)),
            jobs: self.jobs,
            batch_size: self.batch_size,
            accounts: self.accounts,
            job_bytes: self.job_bytes,
            tenant: self.tenant.clone(),
            max_in_flight: self.max_in_flight.max(1),
            max_backlog: self.max_backlog,
            e2e: !self.no_e2e,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            progress,
        })
    }

    pub fn baseline_spec(&self) -> BaselineSpec {
        BaselineSpec {
            jobs: self.baseline_jobs.max(1),
            workers: self.baseline_workers.max(1),
            fetch_batch: self.baseline_fetch.max(1),
            publish_window: self.max_in_flight.clamp(1, 10_000),
            accounts: self.accounts,
            job_bytes: self.job_bytes,
            replicas: 1,
        }
    }
}

/// `codigo-loadtest [flags]`: one run, its summary, and optionally the baseline and a plot.
/// Ctrl-C or SIGTERM stops it, after removing anything the baseline had created.
pub async fn run(args: RunArgs) -> Result<(), LoadError> {
    let spec = args.spec(!args.json)?;
    let server = Server::from_database_url(&args.database.database_url)?;
    let client = nats::connect(&args.nats, "codigo-loadtest", InitialConnect::FailFast).await?;
    let outcome = tokio::select! {
        outcome = measure(&args, &spec, &client, &server) => outcome,
        () = interrupted() => Err(LoadError::Interrupted),
    };
    server
        .destroy_all(&async_nats::jetstream::new(client.clone()))
        .await;
    let report = outcome?;

    if let Some(path) = &args.plot {
        let mut series = vec![plot::Series {
            label: format!("ingest ({})", args.ingest.describe()),
            histogram: &report.ingest_histogram,
        }];
        if let Some(e2e) = &report.e2e_histogram {
            series.push(plot::Series {
                label: "end to end (created_at to committed row)".into(),
                histogram: e2e,
            });
        }
        plot::write(path, "Codigo latency distribution", &series)?;
    }

    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| LoadError::Invalid(format!("cannot encode the summary: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", report.text());
        if let Some(path) = &args.plot {
            println!("\n  latency plot: {}", path.display());
        }
    }
    Ok(())
}

async fn measure(
    args: &RunArgs,
    spec: &RunSpec,
    client: &async_nats::Client,
    server: &Server,
) -> Result<run::Report, LoadError> {
    let pool = if spec.e2e {
        Some(codigo_common::db::connect(&args.database).await?)
    } else {
        None
    };
    let endpoints = Endpoints {
        producer_url: args.producer_url.clone(),
        api_key: args.api_key.clone(),
        nats: client.clone(),
        names: Names::new(&args.nats.namespace)?,
        pool,
    };
    let mut report = run::run(spec, &endpoints).await?;
    if args.baseline {
        if !args.json {
            eprintln!(
                "measuring the bare baseline ({} jobs)...",
                args.baseline_jobs
            );
        }
        let measured = baseline::run(&args.baseline_spec(), client, server).await?;
        report.ratio_to_bare_pipeline = report
            .throughput
            .e2e_jobs_per_sec
            .map(|rate| rate / measured.pipeline_live_per_sec);
        report.baseline = Some(measured);
    }
    Ok(report)
}
