//! `ledger.post`: one ledger entry per job id and its amount added to the account's balance,
//! in the same transaction as the job's row, so that a redelivery changes nothing.
use async_trait::async_trait;
use codigo_schemas::LedgerPost;
use serde_json::json;
use sqlx::PgPool;

use super::{db_failure, typed, Handler, Job, Outcome, Unavailable};
use crate::faults::{Directive, Faults};
use crate::store;

pub struct LedgerPostHandler {
    pool: PgPool,
    faults: Faults,
}

impl LedgerPostHandler {
    pub fn new(pool: PgPool, faults: Faults) -> Self {
        Self { pool, faults }
    }

    #[tracing::instrument(name = "postgres_tx", skip_all)]
    async fn post(&self, job: &Job<'_>, entry: &LedgerPost) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO ledger_entries (job_id, account, currency, amount_cents, memo)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job.record.id)
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
                "INSERT INTO account_balances (account, currency, balance_cents)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (account, currency)
                 DO UPDATE SET balance_cents = account_balances.balance_cents + EXCLUDED.balance_cents",
            )
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

#[async_trait]
impl Handler for LedgerPostHandler {
    fn job_type(&self) -> &'static str {
        codigo_schemas::LEDGER_POST
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
