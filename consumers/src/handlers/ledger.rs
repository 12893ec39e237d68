//! `ledger.post`: one ledger entry per job id and its amount added to the account's balance,
//! in the same transaction as the job's row, so that a redelivery changes nothing. Accounts
//! belong to the job's tenant (`''` for a job published without one): two tenants naming the
//! same account touch two balances.
use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use codigo_schemas::LedgerPost;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{db_failure, typed, Handler, Job, Outcome, Unavailable};
use crate::faults::{Directive, Faults};
use crate::store::{self, DbFailure};

/// Why a group's shared transaction failed.
#[derive(Debug, thiserror::Error)]
enum GroupFailure {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The group's changes to one balance add up beyond 64 bits; the one-by-one path then finds
    /// the job Postgres refuses.
    #[error("a balance change of the group overflows 64 bits")]
    Overflow,
}

pub struct LedgerPostHandler {
    pool: PgPool,
    faults: Faults,
}

/// The tenant a job's ledger rows belong to.
fn tenant<'a>(job: &Job<'a>) -> &'a str {
    job.record.tenant.unwrap_or_default()
}

impl LedgerPostHandler {
    pub fn new(pool: PgPool, faults: Faults) -> Self {
        Self { pool, faults }
    }

    #[tracing::instrument(name = "postgres_tx", skip_all)]
    async fn post(&self, job: &Job<'_>, entry: &LedgerPost) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO ledger_entries (job_id, tenant, account, currency, amount_cents, memo)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job.record.id)
        .bind(tenant(job))
        .bind(&entry.account)
        .bind(&entry.currency)
        .bind(entry.amount_cents)
        .bind(&entry.memo)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            sqlx::query(
                "INSERT INTO account_balances (tenant, account, currency, balance_cents)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, account, currency)
                 DO UPDATE SET balance_cents = account_balances.balance_cents + EXCLUDED.balance_cents",
            )
            .bind(tenant(job))
            .bind(&entry.account)
            .bind(&entry.currency)
            .bind(entry.amount_cents)
            .execute(&mut *tx)
            .await?;
        }
        let result = json!({"applied": inserted});
        store::record_success(&mut *tx, &job.record, Some(&result)).await?;
        tx.commit().await?;
        Ok(inserted)
    }
}

/// A job of a group that goes through the shared transaction.
struct Entry<'j, 'a> {
    job: &'j Job<'a>,
    entry: LedgerPost,
}

impl LedgerPostHandler {
    /// Applies a group of distinct jobs in one transaction: entries inserted at once, balance
    /// changes summed per (tenant, account, currency) and applied in a fixed order (so that concurrent groups
    /// cannot deadlock), job rows written at once. Returns which jobs were new.
    #[tracing::instrument(name = "postgres_tx", skip_all, fields(jobs = entries.len()))]
    async fn post_many(&self, entries: &[Entry<'_, '_>]) -> Result<HashSet<Uuid>, GroupFailure> {
        let mut tx = self.pool.begin().await?;
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO ledger_entries (job_id, tenant, account, currency, amount_cents, memo)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[])
             ON CONFLICT (job_id) DO NOTHING
             RETURNING job_id",
        )
        .bind(entries.iter().map(|e| e.job.record.id).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| tenant(e.job)).collect::<Vec<_>>())
        .bind(
            entries
                .iter()
                .map(|e| e.entry.account.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| e.entry.currency.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| e.entry.amount_cents)
                .collect::<Vec<_>>(),
        )
        .bind(
            entries
                .iter()
                .map(|e| e.entry.memo.as_deref())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *tx)
        .await?;
        let inserted: HashSet<Uuid> = inserted.into_iter().collect();

        let mut deltas: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
        for e in entries
            .iter()
            .filter(|e| inserted.contains(&e.job.record.id))
        {
            let delta = deltas
                .entry((tenant(e.job), &e.entry.account, &e.entry.currency))
                .or_default();
            // An overflow fails the group; the one-by-one fallback then finds the culprit.
            *delta = delta
                .checked_add(e.entry.amount_cents)
                .ok_or(GroupFailure::Overflow)?;
        }
        if !deltas.is_empty() {
            sqlx::query(
                "INSERT INTO account_balances (tenant, account, currency, balance_cents)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
                 ON CONFLICT (tenant, account, currency)
                 DO UPDATE SET balance_cents = account_balances.balance_cents + EXCLUDED.balance_cents",
            )
            .bind(deltas.keys().map(|(t, _, _)| *t).collect::<Vec<_>>())
            .bind(deltas.keys().map(|(_, a, _)| *a).collect::<Vec<_>>())
            .bind(deltas.keys().map(|(_, _, c)| *c).collect::<Vec<_>>())
            .bind(deltas.values().copied().collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        let records: Vec<_> = entries.iter().map(|e| &e.job.record).collect();
        let results: Vec<_> = entries
            .iter()
            .map(|e| json!({"applied": inserted.contains(&e.job.record.id)}))
            .collect();
        store::record_successes(&mut *tx, &records, &results).await?;
        tx.commit().await?;
        Ok(inserted)
    }
}

#[async_trait]
impl Handler for LedgerPostHandler {
    fn job_type(&self) -> &'static str {
        codigo_schemas::LEDGER_POST
    }

    fn handles_groups(&self) -> bool {
        true
    }

    async fn handle_batch(&self, jobs: &[&Job<'_>]) -> Vec<Result<Outcome, Unavailable>> {
        // Jobs that need special treatment (a fault directive, a payload that does not decode,
        // a repeated id) and lone jobs go one by one.
        let mut results: Vec<Option<Result<Outcome, Unavailable>>> = Vec::new();
        let mut shared = Vec::new();
        let mut positions = Vec::new();
        let mut seen = HashSet::new();
        for (index, job) in jobs.iter().enumerate() {
            results.push(None);
            let Ok(entry) = typed::<LedgerPost>(&job.envelope.payload) else {
                continue;
            };
            if self.faults.directive(entry.memo.as_deref()).is_none() && seen.insert(job.record.id)
            {
                shared.push(Entry { job, entry });
                positions.push(index);
            }
        }
        if shared.len() > 1 {
            match self.post_many(&shared).await {
                Ok(_) => {
                    for index in &positions {
                        results[*index] = Some(Ok(Outcome::Succeeded));
                    }
                }
                Err(GroupFailure::Db(error)) => match DbFailure::from(error).observed() {
                    // A job of the group is at fault: the one-by-one path below isolates it.
                    failure @ DbFailure::Job { .. } => {
                        tracing::warn!(error = %failure, jobs = shared.len(), "group transaction failed; retrying one by one")
                    }
                    held => {
                        for index in &positions {
                            results[*index] = Some(Err(Unavailable(held.to_string())));
                        }
                    }
                },
                Err(GroupFailure::Overflow) => {
                    tracing::warn!(
                        jobs = shared.len(),
                        "a balance change of the group overflows 64 bits; retrying one by one"
                    )
                }
            }
        }
        let mut out = Vec::with_capacity(jobs.len());
        for (job, result) in jobs.iter().zip(results) {
            out.push(match result {
                Some(result) => result,
                None => self.handle(job).await,
            });
        }
        out
    }

    #[tracing::instrument(name = "ledger_post", skip_all, fields(job_id = %job.record.id))]
    async fn handle(&self, job: &Job<'_>) -> Result<Outcome, Unavailable> {
        let entry: LedgerPost = match typed(&job.envelope.payload) {
            Ok(entry) => entry,
            Err(outcome) => return Ok(outcome),
        };
        match self.faults.directive(entry.memo.as_deref()) {
            Some(Directive::Sleep(duration)) => tokio::time::sleep(duration).await,
            Some(Directive::Permanent) => {
                return Ok(Outcome::Permanent {
                    error: "rejected by fault injection (chaos:permanent)".into(),
                })
            }
            Some(Directive::Crash) => {
                eprintln!("fault injection: crashing on a chaos:crash job");
                std::process::abort();
            }
            None => {}
        }
        match self.post(job, &entry).await {
            Ok(applied) => {
                if !applied {
                    tracing::info!(job_id = %job.record.id, "ledger entry already applied; redelivery ignored");
                }
                Ok(Outcome::Succeeded)
            }
            Err(error) => db_failure(error),
        }
    }
}
