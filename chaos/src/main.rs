use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use codigo_chaos::{run, ClusterPlan, Plan};

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
    /// Run on a cluster of this many nats-servers (3: the production shape, R3 streams) with
    /// leader and follower kills, pauses and network partitions; 0 runs a single server.
    #[arg(long, default_value_t = 0)]
    cluster: usize,
    /// With --cluster: keep the servers on loopback, without network namespaces (and so
    /// without partitions).
    #[arg(long)]
    no_netns: bool,
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
    if args.cluster > 0 {
        if args.cluster < 3 {
            anyhow::bail!(
                "--cluster {} is too small: a JetStream cluster needs 3 servers to survive \
                 one fault; use --cluster 3",
                args.cluster
            );
        }
        let mut cluster = if args.small {
            plan = Plan {
                keep_dir: args.keep_dir,
                ..Plan::small_cluster(plan.bin_dir, args.cluster)
            };
            ClusterPlan::small(args.cluster)
        } else {
            ClusterPlan::full(args.cluster)
        };
        cluster.netns = !args.no_netns;
        if !args.small {
            plan.ack_wait_secs = plan.ack_wait_secs.max(6);
            plan.slow_ms = plan.slow_ms.max(13_000);
        }
        if !args.small && args.timeout_secs == 1200 {
            // Each fault waits for the cluster to recover: give the schedule its time.
            plan.timeout = Duration::from_secs(1800);
        }
        plan.cluster = Some(cluster);
    }
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
