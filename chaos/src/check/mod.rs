//! The proof: what the gateway accepted against what Postgres, the dead-letter stream, the
//! logs and the metrics say happened.
use codigo_common::contract::JobState;
use std::collections::{HashMap, HashSet};

use sqlx::PgPool;
use uuid::Uuid;

use crate::load::{Ledger, Poison, PoisonKind, TENANT};
use crate::procs::{Counters, Death, Incarnation};
use crate::ChaosError;

mod dead_letters;
mod faults;
mod logs;
mod report;

use self::dead_letters::dead_letters;
use self::faults::{cluster_fault_windows, overlaps, slow_job_lifetimes};
pub use self::faults::{measure_stalls, FaultKind, FaultWindow, Injected};
use self::logs::read_logs;
pub use self::report::Report;

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

fn sample<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().take(5).map(|i| i.to_string()).collect();
    items.join(", ")
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
