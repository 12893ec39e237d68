//! What every chaos run of `make test` needs: the binaries built for fault injection, and the
//! verdict all of them share (nothing accepted lost or applied twice).
use std::path::PathBuf;

use codigo_chaos::{run, Plan, Report};

/// The binaries, the consumer with fault injection (its `chaos` feature).
pub fn bin_dir() -> PathBuf {
    codigo_chaos::bins::build_for_tests().expect("the chaos binaries build")
}

/// Runs `plan`, prints its table and fails unless the run passed with every job accepted and
/// none lost or duplicated; returns the report and its table for the run's own checks.
pub async fn run_losing_nothing(plan: &Plan) -> (Report, String) {
    let report = run(plan).await.expect("the chaos run completes");
    let table = report.table();
    println!("{table}");
    assert!(report.passed(), "{table}");
    assert!(report.accepted >= plan.jobs, "{table}");
    assert_eq!((report.lost, report.duplicated), (0, 0), "{table}");
    (report, table)
}
