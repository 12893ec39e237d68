//! The verdict and its tables.
use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::time::Duration;

use super::faults::{FaultKind, Injected};

pub(super) fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// The verdict, with the numbers behind it.
#[derive(Debug, Default)]
pub struct Report {
    pub accepted: usize,
    pub applied: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub dead_lettered: BTreeMap<String, usize>,
    pub injected: Injected,
    pub aborts_after_commit: u64,
    pub aborts_crash_jobs: u64,
    pub other_deaths: Vec<String>,
    pub redelivered_jobs: u64,
    pub extra_deliveries: u64,
    pub already_applied: u64,
    pub slow_single_delivery: usize,
    /// Slow jobs redelivered while a cluster fault had their consumer's leader unreachable.
    pub slow_redelivered_during_server_faults: usize,
    pub holds_logged: u64,
    pub rebinds_logged: u64,
    pub answers: BTreeMap<u16, u64>,
    pub resubmitted: u64,
    /// Resubmissions answered `duplicate: true`: an earlier attempt answered with an error had
    /// been stored after all (its acknowledgement was lost with the server).
    pub stored_despite_error: u64,
    pub metrics: Vec<String>,
    pub failures: Vec<String>,
}

/// `key<separator>count` of every entry, comma separated.
fn counts<K: Display, V: Display>(map: &BTreeMap<K, V>, separator: &str) -> String {
    map.iter()
        .map(|(key, count)| format!("{key}{separator}{count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The summary table, then every failure.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let dead: usize = self.dead_lettered.values().sum();
        let by_reason = counts(&self.dead_lettered, " ");
        let answers = counts(&self.answers, ": ");
        let poison = counts(&self.injected.poison, " ");
        let rows: Vec<(&str, String, String)> = vec![
            ("accepted", self.accepted.to_string(), "jobs answered 202 (distinct ids)".into()),
            ("applied", self.applied.to_string(), "accepted jobs with their ledger entry, balance and succeeded row".into()),
            ("lost", self.lost.to_string(), "accepted jobs without effect".into()),
            ("duplicated", self.duplicated.to_string(), "effects applied more than once (entries or balances off)".into()),
            ("dead-lettered", dead.to_string(), by_reason),
            ("faults injected", (self.injected.consumer_kills
                + self.aborts_after_commit
                + self.aborts_crash_jobs
                + self.injected.nats_restarts
                + self.injected.postgres_restarts
                + self.injected.cluster_faults())
                .to_string(),
                format!(
                    "consumer kill -9 {}, aborts between commit and ack {}, chaos:crash aborts {}, \
                     NATS kill -9 + restart {}, Postgres immediate restart {}, cluster faults {} \
                     ({} stream leader changes)",
                    self.injected.consumer_kills,
                    self.aborts_after_commit,
                    self.aborts_crash_jobs,
                    self.injected.nats_restarts,
                    self.injected.postgres_restarts,
                    self.injected.cluster_faults(),
                    self.injected.leader_changes()
                )),
            ("poison published", self.injected.poison.values().sum::<u64>().to_string(), poison),
            ("slow jobs", self.injected.slow_jobs.to_string(),
                format!("{} delivered once (attempts = 1, never redelivered); {} redelivered during a cluster fault", self.slow_single_delivery, self.slow_redelivered_during_server_faults)),
            ("redeliveries", (self.extra_deliveries + self.already_applied).to_string(),
                format!(
                    "{} jobs committed on a later delivery ({} extra deliveries); {} redeliveries \
                     found their job already applied",
                    self.redelivered_jobs, self.extra_deliveries, self.already_applied
                )),
            ("gateway answers", self.answers.values().sum::<u64>().to_string(),
                format!(
                    "{answers}; {} resubmissions, of which {} found the job stored already \
                     (duplicate: true)",
                    self.resubmitted, self.stored_despite_error
                )),
            ("holds / rebinds", format!("{} / {}", self.holds_logged, self.rebinds_logged),
                "log lines: workers holding jobs while Postgres was down / losing NATS and re-binding".into()),
            ("orphans", self.injected.orphans.to_string(),
                "acked messages a NATS crash left in CODIGO_JOBS; never redelivered, their jobs applied".into()),
        ];
        let _ = writeln!(out, "{:<17} {:>8}  detail", "", "count");
        for (name, count, detail) in rows {
            let _ = writeln!(out, "{name:<17} {count:>8}  {detail}");
        }
        let _ = writeln!(out);
        out.push_str(&self.fault_table());
        for line in &self.metrics {
            let _ = writeln!(out, "metrics: {line}");
        }
        for death in &self.other_deaths {
            let _ = writeln!(out, "unexpected exit: {death}");
        }
        if self.failures.is_empty() {
            let _ = writeln!(out, "PASSED: nothing lost, nothing done twice");
        } else {
            for failure in &self.failures {
                let _ = writeln!(out, "FAILED: {failure}");
            }
        }
        out
    }
}

impl Report {
    /// Fault, how often, and the longest ingest stall it caused (the longest any job in
    /// flight during it waited from its first submission to its 202).
    pub fn fault_table(&self) -> String {
        let mut out = String::new();
        let injected = &self.injected;
        let servers = if injected.cluster_size > 0 {
            format!("{}-node cluster", injected.cluster_size)
        } else {
            "single nats-server".to_owned()
        };
        let _ = writeln!(
            out,
            "{:<54} {:>5}  longest ingest stall ({servers})",
            "fault", "count"
        );
        let mut kinds: Vec<FaultKind> = injected.windows.iter().map(|w| w.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            let stall = injected
                .windows
                .iter()
                .filter(|w| w.kind == kind)
                .filter_map(|w| w.stall)
                .max();
            let _ = writeln!(
                out,
                "{:<54} {:>5}  {}",
                kind.describe(),
                injected.count(kind),
                secs(stall)
            );
        }
        for (name, count) in [
            ("consumer kill -9", injected.consumer_kills),
            (
                "worker abort between commit and ack",
                self.aborts_after_commit,
            ),
        ] {
            let _ = writeln!(out, "{name:<54} {count:>5}  -");
        }
        let _ = writeln!(
            out,
            "{:<54} {:>5}  {}",
            "(no server fault in progress, for comparison)",
            "-",
            secs(injected.quiet_stall)
        );
        let _ = writeln!(
            out,
            "{:<54} {:>5}  {} lost, {} duplicated",
            "outcome", "", self.lost, self.duplicated
        );
        if let Some(reason) = &injected.partitions_skipped {
            let _ = writeln!(
                out,
                "SKIPPED: the network partitions (one server cut off from its peers, the leader \
                 cut off from clients): {reason}"
            );
        }
        out
    }
}
