//! The small cluster run of `make test`: the real binaries against three nats-servers with R3
//! streams and `sync_interval: always` (deploy/nats/cluster.conf), with the stream leader and
//! a follower killed and restarted on their stores, a paused server, one server cut off from
//! its peers, the leader cut off from its clients, consumer kills and aborts between commit
//! and ack; nothing accepted may be lost or applied twice, and the consumers ride out every
//! leader change without being restarted.
mod common;

use codigo_chaos::check::FaultKind;
use codigo_chaos::Plan;
use common::{bin_dir, run_losing_nothing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_and_duplicates_nothing_under_kills_pauses_and_partitions() {
    let plan = Plan::small_cluster(bin_dir(), 3);
    let (report, table) = run_losing_nothing(&plan).await;
    let injected = &report.injected;
    assert_eq!(injected.cluster_size, 3, "{table}");
    for kind in [
        FaultKind::LeaderKill,
        FaultKind::FollowerKill,
        FaultKind::LeaderPause,
        FaultKind::PostgresRestart,
    ] {
        assert!(injected.count(kind) >= 1, "{kind:?} not injected\n{table}");
    }
    // CI runs as root: there the partitions must run. Elsewhere the table says what was
    // skipped and why.
    if nix::unistd::geteuid().is_root() {
        assert_eq!(injected.partitions_skipped, None, "{table}");
        for kind in [
            FaultKind::LeaderIsolated,
            FaultKind::FollowerIsolated,
            FaultKind::LeaderClientCut,
        ] {
            assert!(injected.count(kind) >= 1, "{kind:?} not injected\n{table}");
        }
    } else {
        assert!(injected.partitions_skipped.is_some(), "{table}");
    }
    // Killing or isolating the leader moves it; the consumers follow without a restart (a
    // consumer that exits on its own fails the check above).
    assert!(injected.leader_changes() >= 1, "{table}");
    assert!(injected.consumer_kills >= plan.kills as u64, "{table}");
}
