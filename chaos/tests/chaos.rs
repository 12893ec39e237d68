//! The small chaos run of `make test`: the real binaries against private NATS and Postgres,
//! with consumer kills, aborts between commit and ack, one NATS and one Postgres restart, slow
//! and poison jobs; nothing accepted may be lost or applied twice.
use std::path::PathBuf;

use codigo_chaos::{run, Plan};

/// `cargo test --workspace` builds every package's binaries into the target directory of the
/// test executable (target/<profile>/deps/..).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_owned();
    for name in ["codigo-producer", "codigo-consumer", "codigo-ctl"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: run the chaos test through `cargo test --workspace` (which builds \
             every binary) or `cargo build --workspace` first",
            dir.join(name).display()
        );
    }
    dir
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
