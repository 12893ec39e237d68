//! The server faults a run injected, their windows and the ingest stalls they caused.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ChaosError;

/// A fault of the NATS servers or Postgres, for the fault table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    LeaderKill,
    FollowerKill,
    LeaderPause,
    FollowerPause,
    LeaderIsolated,
    FollowerIsolated,
    LeaderClientCut,
    NatsRestart,
    PostgresRestart,
}

impl FaultKind {
    pub fn describe(self) -> &'static str {
        match self {
            FaultKind::LeaderKill => "kill -9 of the stream leader, restarted on its store",
            FaultKind::FollowerKill => "kill -9 of a follower, restarted on its store",
            FaultKind::LeaderPause => "stream leader paused (SIGSTOP, then SIGCONT)",
            FaultKind::FollowerPause => "follower paused (SIGSTOP, then SIGCONT)",
            FaultKind::LeaderIsolated => "partition: the leader cut off from both peers",
            FaultKind::FollowerIsolated => "partition: a follower cut off from both peers",
            FaultKind::LeaderClientCut => "partition: leader cut off from clients, sees peers",
            FaultKind::NatsRestart => "kill -9 of the single nats-server, restarted",
            FaultKind::PostgresRestart => "Postgres immediate restart",
        }
    }
}

/// One server fault: when it began and was healed, and what it did to ingest.
#[derive(Debug, Clone)]
pub struct FaultWindow {
    pub kind: FaultKind,
    pub node: String,
    pub start: Instant,
    /// Healed and recovered from (the cluster back to a leader with every replica current).
    pub healed: Instant,
    pub leader_before: Option<String>,
    pub leader_after: Option<String>,
    /// The longest a job waited between its first submission and its 202 among the jobs in
    /// flight during the fault; `None` when no job was submitted then.
    pub stall: Option<Duration>,
}

impl FaultWindow {
    /// A fault of `node` from `start` until now, with no leader change to tell of.
    pub fn until_now(kind: FaultKind, node: &str, start: Instant) -> Self {
        Self {
            kind,
            node: node.to_owned(),
            start,
            healed: Instant::now(),
            leader_before: None,
            leader_after: None,
            stall: None,
        }
    }
}

/// Fills each window's stall from the accepted-request timeline; returns the longest wait of
/// the jobs in flight while no fault was, for comparison.
pub fn measure_stalls(
    windows: &mut [FaultWindow],
    timeline: &[(Instant, Instant)],
) -> Option<Duration> {
    let mut quiet: Option<Duration> = None;
    for window in windows.iter_mut() {
        window.stall = None;
    }
    for (first, accepted) in timeline {
        let wait = accepted.saturating_duration_since(*first);
        let mut during_fault = false;
        for window in windows.iter_mut() {
            if *first <= window.healed && *accepted >= window.start {
                during_fault = true;
                window.stall = Some(window.stall.map_or(wait, |s| s.max(wait)));
            }
        }
        if !during_fault {
            quiet = Some(quiet.map_or(wait, |s| s.max(wait)));
        }
    }
    quiet
}

/// Faults the run injected, counted as they happened.
#[derive(Debug, Default, Clone)]
pub struct Injected {
    pub consumer_kills: u64,
    pub nats_restarts: u64,
    pub postgres_restarts: u64,
    pub slow_jobs: u64,
    pub poison: BTreeMap<&'static str, u64>,
    /// Messages left in the work stream that its consumer will never deliver again (acked
    /// jobs whose removal a NATS crash undid).
    pub orphans: u64,
    /// NATS and Postgres faults with their windows, in order.
    pub windows: Vec<FaultWindow>,
    /// The longest first-attempt-to-202 wait while no server fault was in progress.
    pub quiet_stall: Option<Duration>,
    /// Servers in the cluster (0: a single server).
    pub cluster_size: usize,
    /// The network faults that could not run, and why.
    pub partitions_skipped: Option<String>,
}

impl Injected {
    pub fn count(&self, kind: FaultKind) -> u64 {
        self.windows.iter().filter(|w| w.kind == kind).count() as u64
    }

    /// Stream leader changes the faults caused.
    pub fn leader_changes(&self) -> u64 {
        self.windows
            .iter()
            .filter(|w| w.leader_before.is_some() && w.leader_before != w.leader_after)
            .count() as u64
    }

    pub(super) fn cluster_faults(&self) -> u64 {
        self.windows
            .iter()
            .filter(|w| !matches!(w.kind, FaultKind::NatsRestart | FaultKind::PostgresRestart))
            .count() as u64
    }
}

/// How long after a fault is healed a progress signal lost in it can still cause a
/// redelivery: the longest ack wait the suite configures, with room for the election.
pub(super) const FAULT_ECHO: Duration = Duration::from_secs(15);

/// When each slow job was submitted and when it finished, from the jobs table.
pub(super) async fn slow_job_lifetimes(
    pool: &PgPool,
    slow: &HashSet<Uuid>,
) -> Result<HashMap<Uuid, (OffsetDateTime, OffsetDateTime)>, ChaosError> {
    let ids: Vec<Uuid> = slow.iter().copied().collect();
    let rows: Vec<(Uuid, OffsetDateTime, Option<OffsetDateTime>)> =
        sqlx::query_as("SELECT id, created_at, finished_at FROM jobs WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await
            .map_err(|e| ChaosError::Check(format!("reading slow jobs: {e}")))?;
    let now = OffsetDateTime::now_utc();
    Ok(rows
        .into_iter()
        .map(|(id, created, finished)| (id, (created, finished.unwrap_or(now))))
        .collect())
}

/// The cluster faults' windows on the wall clock, each extended by [`FAULT_ECHO`].
pub(super) fn cluster_fault_windows(injected: &Injected) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let (now, wall_now) = (Instant::now(), OffsetDateTime::now_utc());
    let wall = |at: Instant| wall_now - now.saturating_duration_since(at);
    injected
        .windows
        .iter()
        .filter(|w| !matches!(w.kind, FaultKind::NatsRestart | FaultKind::PostgresRestart))
        .map(|w| (wall(w.start), wall(w.healed) + FAULT_ECHO))
        .collect()
}

pub(super) fn overlaps(
    life: &(OffsetDateTime, OffsetDateTime),
    window: &(OffsetDateTime, OffsetDateTime),
) -> bool {
    life.0 <= window.1 && window.0 <= life.1
}
