use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use codigo_chaos::{run, Plan};

/// Runs the Codigo pipeline under faults (consumer kills, aborts between commit and ack, NATS
/// and Postgres crash-restarts, slow and poison jobs) and proves that nothing accepted was
/// lost or applied twice. Exits non-zero on any loss or duplicate.
#[derive(Debug, Parser)]
#[command(name = "codigo-chaos", version)]
struct Args {
    /// Directory holding codigo-producer, codigo-consumer and codigo-ctl.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// `ledger.post` jobs submitted through the gateway.
    #[arg(long, default_value_t = 50_000)]
    jobs: usize,
    /// Random consumer `kill -9`s during the faulty phase.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Consumer processes.
    #[arg(long, default_value_t = 3)]
    consumers: usize,
    /// Probability that a worker aborts between a commit and its ack.
    #[arg(long, default_value_t = 0.002)]
    crash_after_commit: f64,
    /// The small plan of `make test` instead of the full one (other flags then ignored).
    #[arg(long)]
    small: bool,
    /// Longest the run may take, in seconds.
    #[arg(long, default_value_t = 1200)]
    timeout_secs: u64,
    /// Keep the work directory (logs, server data) afterwards.
    #[arg(long)]
    keep_dir: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut plan = if args.small {
        Plan::small(args.bin_dir)
    } else {
        Plan {
            jobs: args.jobs,
            kills: args.kills,
            consumers: args.consumers,
            crash_after_commit: args.crash_after_commit,
            timeout: Duration::from_secs(args.timeout_secs),
            ..Plan::full(args.bin_dir)
        }
    };
    plan.keep_dir = args.keep_dir;
    let report = run(&plan).await?;
    println!("{}", report.table());
    if !report.passed() {
        eprintln!(
            "codigo-chaos: {} problem(s) found; see the table above",
            report.failures.len()
        );
        std::process::exit(1);
    }
    Ok(())
}
