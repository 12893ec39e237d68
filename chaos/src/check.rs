//! The proof: what the gateway accepted against what Postgres, the dead-letter stream, the
//! logs and the metrics say happened.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use codigo_common::contract::{headers, JobState};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::load::{Ledger, Poison, PoisonKind, TENANT};
use crate::procs::{Counters, Death, Incarnation};
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

    fn cluster_faults(&self) -> u64 {
        self.windows
            .iter()
            .filter(|w| !matches!(w.kind, FaultKind::NatsRestart | FaultKind::PostgresRestart))
            .count() as u64
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// Everything the checker looks at.
pub struct Evidence<'a> {
    pub pool: &'a PgPool,
    pub js: &'a async_nats::jetstream::Context,
    pub dlq_stream: &'a str,
    pub ledger: &'a Ledger,
    pub poisons: &'a [Poison],
    pub slow: &'a HashSet<Uuid>,
    pub incarnations: &'a [Incarnation],
    pub producer_metrics: &'a str,
    pub injected: &'a Injected,
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

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The summary table, then every failure.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let dead: usize = self.dead_lettered.values().sum();
        let by_reason = self
            .dead_lettered
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let answers = self
            .answers
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let poison = self
            .injected
            .poison
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
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

fn sample<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().take(5).map(|i| i.to_string()).collect();
    items.join(", ")
}

/// Reads every dead letter: (body, reason).
async fn dead_letters(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Result<Vec<(bytes::Bytes, String)>, ChaosError> {
    let mut stream = js
        .get_stream(stream)
        .await
        .map_err(|e| ChaosError::Check(format!("dead-letter stream {stream}: {e}")))?;
    let state = stream
        .info()
        .await
        .map_err(|e| ChaosError::Check(format!("dead-letter stream info: {e}")))?
        .state
        .clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            let reason = message
                .headers
                .get(headers::DLQ_REASON)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push((message.payload, reason));
        }
    }
    Ok(out)
}

#[derive(Default)]
struct LogFacts {
    aborts_after_commit: u64,
    aborts_crash_jobs: u64,
    already_applied: HashMap<Uuid, u64>,
    holds: u64,
    rebinds: u64,
    /// Incarnations that died of SIGABRT without a fault-injection line: real crashes.
    unexplained_aborts: Vec<String>,
}

fn read_logs(incarnations: &[Incarnation]) -> LogFacts {
    let mut facts = LogFacts::default();
    for incarnation in incarnations {
        let text = std::fs::read_to_string(&incarnation.log).unwrap_or_default();
        let mut injected = false;
        for line in text.lines() {
            if line.contains("fault injection: aborting between commit and ack") {
                facts.aborts_after_commit += 1;
                injected = true;
            } else if line.contains("fault injection: crashing on a chaos:crash job") {
                facts.aborts_crash_jobs += 1;
                injected = true;
            } else if line.contains("already applied") {
                let id = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["job_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()));
                *facts
                    .already_applied
                    .entry(id.unwrap_or_default())
                    .or_default() += 1;
            } else if line.contains("dependency unavailable") {
                facts.holds += 1;
            } else if line.contains("rebinding")
                || line.contains("cannot bind consumer")
                || line.contains("disconnected from NATS")
            {
                facts.rebinds += 1;
            }
        }
        // A worker the suite killed may have been aborting at that very moment: only a
        // SIGABRT needs its explanation.
        if matches!(incarnation.ended, Some((_, Death::Aborted))) && !injected {
            facts
                .unexplained_aborts
                .push(incarnation.log.display().to_string());
        }
    }
    facts
}

pub async fn check(evidence: Evidence<'_>) -> Result<Report, ChaosError> {
    let Evidence {
        pool,
        js,
        dlq_stream,
        ledger,
        poisons,
        slow,
        incarnations,
        producer_metrics,
        injected,
    } = evidence;
    let mut report = Report {
        accepted: ledger.accepted.len(),
        injected: injected.clone(),
        answers: ledger.statuses.clone(),
        resubmitted: ledger.resubmitted,
        stored_despite_error: ledger.duplicates,
        ..Report::default()
    };
    let failures = &mut report.failures;

    // What the gateway itself got wrong.
    if ledger.never_accepted > 0 {
        failures.push(format!(
            "{} jobs were never accepted before the deadline: the gateway did not recover",
            ledger.never_accepted
        ));
    }
    if !ledger.rejected.is_empty() {
        failures.push(format!(
            "{} valid jobs were rejected: {}",
            ledger.rejected.len(),
            sample(&ledger.rejected)
        ));
    }
    if !ledger.wrong_ids.is_empty() {
        failures.push(format!(
            "ids not derived from the idempotency key: {}",
            sample(&ledger.wrong_ids)
        ));
    }
    if ledger.missing_retry_after > 0 {
        failures.push(format!(
            "{} answers 503 without Retry-After",
            ledger.missing_retry_after
        ));
    }
    let server_errors: u64 = ledger
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500 && **s != 503)
        .map(|(_, n)| n)
        .sum();
    if server_errors > 0 {
        failures.push(format!(
            "{server_errors} gateway answers were 5xx other than 503"
        ));
    }

    // Effects: one ledger entry per accepted job, with its amount, and nothing else.
    // Accounts are keyed per tenant: the suite's jobs are all booked to TENANT.
    let entries: Vec<(Uuid, String, String, i64)> =
        sqlx::query_as("SELECT job_id, tenant, account, amount_cents FROM ledger_entries")
            .fetch_all(pool)
            .await
            .map_err(|e| ChaosError::Check(format!("reading ledger_entries: {e}")))?;
    let mut entry_sums: HashMap<(String, String), i64> = HashMap::new();
    let mut applied = HashSet::new();
    let mut unexpected = Vec::new();
    let mut wrong_amount = Vec::new();
    let mut repeated = 0usize;
    for (id, tenant, account, amount) in &entries {
        *entry_sums
            .entry((tenant.clone(), account.clone()))
            .or_default() += amount;
        if !applied.insert(*id) {
            repeated += 1;
        }
        match ledger.accepted.get(id) {
            Some(job) if job.amount != *amount || job.account != *account || tenant != TENANT => {
                wrong_amount.push(*id)
            }
            Some(_) => {}
            None => unexpected.push(*id),
        }
    }
    let lost: Vec<Uuid> = ledger
        .accepted
        .keys()
        .filter(|id| !applied.contains(*id))
        .copied()
        .collect();
    report.lost = lost.len();
    if !lost.is_empty() {
        failures.push(format!(
            "{} accepted jobs were lost, e.g. {}",
            lost.len(),
            sample(&lost)
        ));
    }
    if !unexpected.is_empty() {
        failures.push(format!(
            "{} ledger entries belong to no accepted job (stored after a non-202 answer, or a \
             poison job applied), e.g. {}",
            unexpected.len(),
            sample(&unexpected)
        ));
    }
    if !wrong_amount.is_empty() {
        failures.push(format!(
            "{} entries differ from their job: {}",
            wrong_amount.len(),
            sample(&wrong_amount)
        ));
    }

    // Balances: exactly the sum of the accepted amounts, account by account.
    let balances: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT tenant, account, balance_cents FROM account_balances WHERE currency = 'EUR'",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| ChaosError::Check(format!("reading account_balances: {e}")))?;
    let mut expected: HashMap<(String, String), i64> = HashMap::new();
    for job in ledger.accepted.values() {
        *expected
            .entry((TENANT.to_owned(), job.account.clone()))
            .or_default() += job.amount;
    }
    let balances: HashMap<(String, String), i64> = balances
        .into_iter()
        .map(|(tenant, account, balance)| ((tenant, account), balance))
        .collect();
    let mut off_accounts = Vec::new();
    for key in balances
        .keys()
        .chain(expected.keys())
        .collect::<HashSet<_>>()
    {
        let balance = balances.get(key).copied().unwrap_or(0);
        let want = expected.get(key).copied().unwrap_or(0);
        let from_entries = entry_sums.get(key).copied().unwrap_or(0);
        if balance != want || balance != from_entries {
            let (tenant, account) = key;
            off_accounts.push(format!(
                "{tenant}/{account}: balance {balance}, accepted sum {want}, entries sum {from_entries}"
            ));
        }
    }
    report.duplicated = repeated + off_accounts.len();
    if !off_accounts.is_empty() {
        failures.push(format!(
            "{} account balances differ from the exact sum of accepted amounts: {}",
            off_accounts.len(),
            sample(&off_accounts)
        ));
    }

    // The jobs table: every accepted job succeeded; how many needed more than one delivery.
    let rows: Vec<(Uuid, JobState, i32)> =
        sqlx::query_as("SELECT id, status, attempts FROM jobs WHERE type = 'ledger.post'")
            .fetch_all(pool)
            .await
            .map_err(|e| ChaosError::Check(format!("reading jobs: {e}")))?;
    let rows: HashMap<Uuid, (JobState, i32)> =
        rows.into_iter().map(|(id, s, a)| (id, (s, a))).collect();
    let mut not_succeeded = Vec::new();
    for id in ledger.accepted.keys() {
        match rows.get(id) {
            Some((JobState::Succeeded, attempts)) => {
                if *attempts > 1 {
                    report.redelivered_jobs += 1;
                    report.extra_deliveries += u64::try_from(*attempts - 1).unwrap_or(0);
                }
            }
            other => not_succeeded.push(format!("{id}: {other:?}")),
        }
    }
    report.applied = ledger
        .accepted
        .keys()
        .filter(|id| {
            applied.contains(*id)
                && rows
                    .get(*id)
                    .is_some_and(|(s, _)| *s == JobState::Succeeded)
        })
        .count();
    if !not_succeeded.is_empty() {
        failures.push(format!(
            "{} accepted jobs are not marked succeeded in jobs: {}",
            not_succeeded.len(),
            sample(&not_succeeded)
        ));
    }

    // Poison: each one exactly once in the dead-letter stream, with its reason; nothing else
    // there.
    let letters = dead_letters(js, dlq_stream).await?;
    let mut by_body: HashMap<&[u8], Vec<&str>> = HashMap::new();
    for (body, reason) in &letters {
        by_body
            .entry(body.as_ref())
            .or_default()
            .push(reason.as_str());
        *report.dead_lettered.entry(reason.clone()).or_default() += 1;
    }
    let mut misfiled = Vec::new();
    for poison in poisons {
        match by_body.get(poison.body.as_ref()).map(Vec::as_slice) {
            Some([reason]) if *reason == poison.kind.reason() => {}
            found => misfiled.push(format!(
                "{:?} poison {} expected once with reason {}, found {found:?}",
                poison.kind,
                poison
                    .id
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| String::from_utf8_lossy(&poison.body).into_owned()),
                poison.kind.reason()
            )),
        }
    }
    let known: HashSet<&[u8]> = poisons.iter().map(|p| p.body.as_ref()).collect();
    let strangers = letters
        .iter()
        .filter(|(b, _)| !known.contains(b.as_ref()))
        .count();
    if !misfiled.is_empty() {
        failures.push(format!(
            "{} poison messages are not dead-lettered as they should be: {}",
            misfiled.len(),
            sample(&misfiled)
        ));
    }
    if strangers > 0 {
        failures.push(format!(
            "{strangers} dead letters are not poison messages (accepted jobs dead-lettered)"
        ));
    }
    let poison_rows_wrong: Vec<String> = poisons
        .iter()
        .filter(|p| p.kind != PoisonKind::Decode)
        .filter_map(|p| p.id)
        .filter(|id| {
            rows.get(id)
                .is_none_or(|(s, _)| *s != JobState::DeadLettered)
        })
        .map(|id| format!("{id}: {:?}", rows.get(&id)))
        .collect();
    if !poison_rows_wrong.is_empty() {
        failures.push(format!(
            "{} dead-lettered jobs are not marked dead_lettered in jobs: {}",
            poison_rows_wrong.len(),
            sample(&poison_rows_wrong)
        ));
    }

    // Logs: the faults really hit; slow jobs were never handed to a second worker.
    let facts = read_logs(incarnations);
    report.aborts_after_commit = facts.aborts_after_commit;
    report.aborts_crash_jobs = facts.aborts_crash_jobs;
    report.already_applied = facts.already_applied.values().sum();
    report.holds_logged = facts.holds;
    report.rebinds_logged = facts.rebinds;
    if !facts.unexplained_aborts.is_empty() {
        failures.push(format!(
            "{} consumers died of SIGABRT without fault injection: {}",
            facts.unexplained_aborts.len(),
            sample(&facts.unexplained_aborts)
        ));
    }
    for incarnation in incarnations {
        if let Some((_, Death::Other(how))) = &incarnation.ended {
            report.other_deaths.push(format!(
                "consumer {}-{} {how}; see {}",
                incarnation.slot,
                incarnation.number,
                incarnation.log.display()
            ));
        }
    }
    if !report.other_deaths.is_empty() {
        failures.push(format!(
            "{} consumers exited on their own",
            report.other_deaths.len()
        ));
    }
    if report.injected.consumer_kills > 0 && report.redelivered_jobs + report.already_applied == 0 {
        failures.push("no job was redelivered: the faults did not hit".into());
    }
    if facts.aborts_after_commit == 0 {
        failures.push("no worker died between commit and ack: raise crash_after_commit".into());
    }
    // A worker's progress signals go to the consumer's leader: while that server is killed,
    // paused or cut off, or a new leader is being elected, they are lost and JetStream
    // redelivers after the ack wait, as at-least-once delivery allows (the effect still
    // happens once, which the checks above prove). So a slow job redelivered while a cluster
    // fault was in progress is counted apart; any other redelivery fails the run.
    let lived = slow_job_lifetimes(pool, slow).await?;
    let fault_windows = cluster_fault_windows(injected);
    let mut slow_redelivered = Vec::new();
    for id in slow {
        let attempts = rows.get(id).map(|(_, a)| *a);
        if attempts == Some(1) && !facts.already_applied.contains_key(id) {
            report.slow_single_delivery += 1;
        } else if lived
            .get(id)
            .is_some_and(|life| fault_windows.iter().any(|w| overlaps(life, w)))
        {
            report.slow_redelivered_during_server_faults += 1;
        } else {
            slow_redelivered.push(format!("{id}: attempts {attempts:?}"));
        }
    }
    if !slow_redelivered.is_empty() {
        failures.push(format!(
            "{} slow jobs were redelivered although their worker was alive and signalling \
             progress: {}",
            slow_redelivered.len(),
            sample(&slow_redelivered)
        ));
    }

    // Metrics. The gateway is never killed: its counters must equal what its clients saw.
    let published = |result: &str| {
        crate::procs::producer_counter(
            producer_metrics,
            "codigo_gateway_jobs_published_total",
            &[("job_type", "ledger.post"), ("result", result)],
        ) as u64
    };
    let new_accepts = ledger.accepted.len() as u64;
    let mut compare =
        |name: &str, metric: u64, seen: u64, failures: &mut Vec<String>, exact: bool| {
            report_line(&mut report.metrics, name, metric, seen);
            if (exact && metric != seen) || (!exact && metric > seen) {
                failures.push(format!("metric {name} = {metric} disagrees with {seen}"));
            }
        };
    // The suite stops resubmitting a job at its first 202; that 202 says `duplicate` when an
    // earlier attempt was stored although its answer was an error.
    compare(
        "gateway published{result=accepted+duplicate} vs 202 items seen",
        published("accepted") + published("duplicate"),
        new_accepts,
        failures,
        true,
    );
    compare(
        "gateway published{result=duplicate} vs 202 items marked duplicate",
        published("duplicate"),
        ledger.duplicates,
        failures,
        true,
    );
    compare(
        "gateway published{result=error} vs item errors + single 503s seen",
        published("error"),
        ledger.item_errors + ledger.single_unavailable,
        failures,
        true,
    );
    // Consumers: counters die with a killed process, so the sum of the last scrape of every
    // incarnation is a lower bound; it may never exceed what Postgres and the stream hold.
    let mut total = Counters::default();
    for incarnation in incarnations {
        if let Some(counters) = &incarnation.counters {
            for (k, v) in &counters.acks {
                *total.acks.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &counters.dead_letters {
                *total.dead_letters.entry(k.clone()).or_default() += v;
            }
        }
    }
    let succeeded = rows
        .values()
        .filter(|(s, _)| *s == JobState::Succeeded)
        .count() as u64;
    let acks = total.acks.get("ack").copied().unwrap_or(0.0) as u64;
    for (reason, count) in &report.dead_lettered {
        let metric = total.dead_letters.get(reason).copied().unwrap_or(0.0) as u64;
        compare(
            &format!("consumer dead_letters{{reason={reason}}} (lower bound) vs CODIGO_DLQ"),
            metric,
            *count as u64,
            failures,
            false,
        );
    }
    // Informational: a repeat delivery of a committed job is acked again, and how many jobs
    // one abort between commit and ack leaves behind depends on how many were in flight.
    report_line(
        &mut report.metrics,
        "consumer acks{outcome=ack} (lower bound) vs jobs succeeded",
        acks,
        succeeded,
    );
    Ok(report)
}

fn report_line(lines: &mut Vec<String>, name: &str, metric: u64, seen: u64) {
    lines.push(format!("{name}: {metric} / {seen}"));
}

/// How long after a fault is healed a progress signal lost in it can still cause a
/// redelivery: the longest ack wait the suite configures, with room for the election.
const FAULT_ECHO: Duration = Duration::from_secs(15);

/// When each slow job was submitted and when it finished, from the jobs table.
async fn slow_job_lifetimes(
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
fn cluster_fault_windows(injected: &Injected) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let (now, wall_now) = (Instant::now(), OffsetDateTime::now_utc());
    let wall = |at: Instant| wall_now - now.saturating_duration_since(at);
    injected
        .windows
        .iter()
        .filter(|w| !matches!(w.kind, FaultKind::NatsRestart | FaultKind::PostgresRestart))
        .map(|w| (wall(w.start), wall(w.healed) + FAULT_ECHO))
        .collect()
}

fn overlaps(
    life: &(OffsetDateTime, OffsetDateTime),
    window: &(OffsetDateTime, OffsetDateTime),
) -> bool {
    life.0 <= window.1 && window.0 <= life.1
}
