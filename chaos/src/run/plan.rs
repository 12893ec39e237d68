//! The shape of a run: how many jobs and faults of each kind, on one server or a cluster.
use std::path::PathBuf;
use std::time::Duration;

use crate::check::FaultKind;

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where codigo-producer, codigo-consumer and codigo-ctl are.
    pub bin_dir: PathBuf,
    /// Regular `ledger.post` jobs submitted through the gateway.
    pub jobs: usize,
    /// Consumer processes.
    pub consumers: usize,
    /// `kill -9` of a random consumer during the faulty phase (the switch to the calm phase
    /// kills every consumer once more).
    pub kills: usize,
    /// Probability that a worker aborts between a commit and its ack.
    pub crash_after_commit: f64,
    /// Jobs that crash their worker every time, until MaxDeliver dead-letters them.
    pub crash_jobs: usize,
    /// Poison published straight to JetStream, as a share of `jobs` (0.01 = 1 %).
    pub poison_share: f64,
    /// Jobs that run longer than the ack wait, and how long.
    pub slow_jobs: usize,
    pub slow_ms: u64,
    /// Share of `jobs` submitted in the calm phase, with the slow jobs.
    pub calm_share: f64,
    pub accounts: usize,
    pub submitters: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub ack_wait_secs: u64,
    pub max_deliver: i64,
    /// Longest the whole run may take before the check runs on what there is.
    pub timeout: Duration,
    /// Keep the work directory (logs, server data) for a post-mortem.
    pub keep_dir: bool,
    /// A three-node R3 cluster with its own faults instead of the single server.
    pub cluster: Option<ClusterPlan>,
}

/// The cluster faults of a run; each is healed, and the cluster back to a leader with every
/// replica current, before the next one.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub size: usize,
    pub leader_kills: usize,
    pub follower_kills: usize,
    /// Alternately the stream leader and a follower.
    pub pauses: usize,
    /// One server cut off from both peers: alternately the leader and a follower.
    pub isolations: usize,
    /// The leader cut off from its clients while it still sees its peers.
    pub client_cuts: usize,
    /// How long a killed server stays down, a paused one stopped, a cut link down.
    pub down: Duration,
    pub pause: Duration,
    pub cut: Duration,
    /// Put each server in a network namespace for the partitions (needs root and iproute2).
    pub netns: bool,
}

impl ClusterPlan {
    /// `make chaos CLUSTER=3`: every fault twice.
    pub fn full(size: usize) -> Self {
        Self {
            size,
            leader_kills: 2,
            follower_kills: 2,
            pauses: 2,
            isolations: 2,
            client_cuts: 2,
            down: Duration::from_secs(3),
            pause: Duration::from_secs(12),
            cut: Duration::from_secs(12),
            netns: true,
        }
    }

    /// `make test`: each fault once (the isolation of leader and follower both).
    pub fn small(size: usize) -> Self {
        Self {
            leader_kills: 1,
            follower_kills: 1,
            pauses: 1,
            isolations: 2,
            client_cuts: 1,
            down: Duration::from_secs(2),
            pause: Duration::from_secs(10),
            cut: Duration::from_secs(10),
            ..Self::full(size)
        }
    }

    /// The faults in the order they are injected: kinds interleaved.
    pub(super) fn schedule(&self, network: bool) -> Vec<FaultKind> {
        let mut lanes: Vec<Vec<FaultKind>> = vec![
            vec![FaultKind::LeaderKill; self.leader_kills],
            alternating(
                self.pauses,
                FaultKind::LeaderPause,
                FaultKind::FollowerPause,
            ),
            vec![FaultKind::FollowerKill; self.follower_kills],
        ];
        if network {
            lanes.push(alternating(
                self.isolations,
                FaultKind::FollowerIsolated,
                FaultKind::LeaderIsolated,
            ));
            lanes.push(vec![FaultKind::LeaderClientCut; self.client_cuts]);
        }
        let mut out = Vec::new();
        for round in 0..lanes.iter().map(Vec::len).max().unwrap_or(0) {
            out.extend(lanes.iter().filter_map(|lane| lane.get(round).copied()));
        }
        out
    }

    /// A rough length of the schedule, to spread the load over it.
    pub(super) fn estimate(&self, faults: &[FaultKind]) -> Duration {
        faults
            .iter()
            .map(|kind| {
                FAULT_GAP
                    + Duration::from_secs(6)
                    + match kind {
                        FaultKind::LeaderKill | FaultKind::FollowerKill => self.down,
                        FaultKind::LeaderPause | FaultKind::FollowerPause => self.pause,
                        _ => self.cut,
                    }
            })
            .sum()
    }
}

/// `count` faults, `first` and `second` by turns.
fn alternating(count: usize, first: FaultKind, second: FaultKind) -> Vec<FaultKind> {
    (0..count)
        .map(|n| if n % 2 == 0 { first } else { second })
        .collect()
}

/// Quiet time between one fault's recovery and the next fault.
pub(super) const FAULT_GAP: Duration = Duration::from_secs(2);

impl Plan {
    /// `make chaos`: at least 50,000 jobs and 20 kills.
    pub fn full(bin_dir: PathBuf) -> Self {
        Self {
            bin_dir,
            jobs: 50_000,
            consumers: 3,
            kills: 20,
            crash_after_commit: 0.002,
            crash_jobs: 2,
            poison_share: 0.01,
            slow_jobs: 20,
            slow_ms: 10_000,
            calm_share: 0.15,
            accounts: 50,
            submitters: 6,
            batch: 50,
            concurrency: 32,
            ack_wait_secs: 4,
            max_deliver: 8,
            timeout: Duration::from_secs(1200),
            keep_dir: false,
            cluster: None,
        }
    }

    /// The run inside `make test`: every fault once or a few times, a few thousand jobs.
    pub fn small(bin_dir: PathBuf) -> Self {
        Self {
            jobs: 3000,
            kills: 4,
            crash_after_commit: 0.003,
            crash_jobs: 1,
            slow_jobs: 4,
            slow_ms: 7000,
            calm_share: 0.2,
            accounts: 20,
            submitters: 4,
            ack_wait_secs: 3,
            max_deliver: 8,
            timeout: Duration::from_secs(150),
            ..Self::full(bin_dir)
        }
    }

    /// The small run on a cluster of `size`: fewer jobs, every cluster fault once.
    pub fn small_cluster(bin_dir: PathBuf, size: usize) -> Self {
        Self {
            kills: 3,
            // R3 with an fsync per write on a loaded 2-core machine: progress signals need
            // more headroom than on one server, and slow jobs still outlast two ack waits.
            ack_wait_secs: 5,
            slow_ms: 11_000,
            timeout: Duration::from_secs(300),
            cluster: Some(ClusterPlan::small(size)),
            ..Self::small(bin_dir)
        }
    }
}
