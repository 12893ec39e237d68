//! The small chaos run of `make test`: the real binaries against private NATS and Postgres,
//! with consumer kills, aborts between commit and ack, one NATS and one Postgres restart, slow
//! and poison jobs; nothing accepted may be lost or applied twice.
mod common;

use codigo_chaos::Plan;
use common::{bin_dir, run_losing_nothing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_or_applied_twice_under_faults() {
    let plan = Plan::small(bin_dir());
    let (report, table) = run_losing_nothing(&plan).await;
    assert!(
        report.injected.consumer_kills >= plan.kills as u64,
        "{table}"
    );
    assert_eq!(report.injected.nats_restarts, 1, "{table}");
    assert_eq!(report.injected.postgres_restarts, 1, "{table}");
}
