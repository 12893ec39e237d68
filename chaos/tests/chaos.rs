//! The small chaos run of `make test`: the real binaries against private NATS and Postgres,
//! with consumer kills, aborts between commit and ack, one NATS and one Postgres restart, slow
//! and poison jobs; nothing accepted may be lost or applied twice.
use std::path::PathBuf;

use codigo_chaos::{run, Plan};

/// The binaries, the consumer with fault injection (its `chaos` feature).
fn bin_dir() -> PathBuf {
    codigo_chaos::bins::build_for_tests().expect("the chaos binaries build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_or_applied_twice_under_faults() {
    let plan = Plan::small(bin_dir());
    let report = run(&plan).await.expect("the chaos run completes");
    let table = report.table();
    println!("{table}");
    assert!(report.passed(), "{table}");
    assert!(report.accepted >= plan.jobs, "{table}");
    assert_eq!((report.lost, report.duplicated), (0, 0), "{table}");
    assert!(
        report.injected.consumer_kills >= plan.kills as u64,
        "{table}"
    );
    assert_eq!(report.injected.nats_restarts, 1, "{table}");
    assert_eq!(report.injected.postgres_restarts, 1, "{table}");
}
