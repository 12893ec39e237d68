//! `ledger.post`: one ledger entry per job id and its amount added to the account's balance,
//! in the same transaction as the job's row, so that a redelivery changes nothing. Accounts
//! belong to the job's tenant (`''` for a job published without one): two tenants naming the
//! same account touch two balances.
use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use codigo_schemas::LedgerPost;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runtime::{Done, JobCtx, JobError, JobTx, Worker};

/// Posts ledger entries; groups of jobs that arrived together share one transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct LedgerPostWorker;

type Job<'j, 'a> = &'j JobCtx<'a, LedgerPost>;

/// The tenant a job's ledger rows belong to.
fn tenant<'a>(job: &JobCtx<'a, LedgerPost>) -> &'a str {
    job.tenant.unwrap_or_default()
}

/// The worker's statements; public so that the benchmark's bare baseline runs the very same.
/// Entries are keyed by job id, so a redelivered job inserts nothing and moves no balance.
pub mod sql {
    use codigo_schemas::LedgerPost;
    use sqlx::PgConnection;
    use uuid::Uuid;

    pub const INSERT_ENTRY: &str =
        "INSERT INTO ledger_entries (job_id, tenant, account, currency, amount_cents, memo)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (job_id) DO NOTHING";
    pub const UPSERT_BALANCE: &str =
        "INSERT INTO account_balances (tenant, account, currency, balance_cents)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant, account, currency)
         DO UPDATE SET balance_cents = account_balances.balance_cents + EXCLUDED.balance_cents";
    /// [`INSERT_ENTRY`] over arrays, returning the ids it inserted.
    pub const INSERT_ENTRIES: &str =
        "INSERT INTO ledger_entries (job_id, tenant, account, currency, amount_cents, memo)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[])
         ON CONFLICT (job_id) DO NOTHING
         RETURNING job_id";
    /// [`UPSERT_BALANCE`] over arrays of summed changes.
    pub const UPSERT_BALANCES: &str =
        "INSERT INTO account_balances (tenant, account, currency, balance_cents)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
         ON CONFLICT (tenant, account, currency)
         DO UPDATE SET balance_cents = account_balances.balance_cents + EXCLUDED.balance_cents";

    /// Inserts the entry of job `id`; whether it was new.
    pub async fn insert_entry(
        conn: &mut PgConnection,
        id: Uuid,
        tenant: &str,
        entry: &LedgerPost,
    ) -> Result<bool, sqlx::Error> {
        let inserted = sqlx::query(INSERT_ENTRY)
            .bind(id)
            .bind(tenant)
            .bind(&entry.account)
            .bind(&entry.currency)
            .bind(entry.amount_cents)
            .bind(&entry.memo)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    /// Adds the entry's amount to its account's balance.
    pub async fn add_to_balance(
        conn: &mut PgConnection,
        tenant: &str,
        entry: &LedgerPost,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(UPSERT_BALANCE)
            .bind(tenant)
            .bind(&entry.account)
            .bind(&entry.currency)
            .bind(entry.amount_cents)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Applies one entry, its balance change only when the entry is new; whether it was.
    pub async fn post(
        conn: &mut PgConnection,
        id: Uuid,
        tenant: &str,
        entry: &LedgerPost,
    ) -> Result<bool, sqlx::Error> {
        let inserted = insert_entry(conn, id, tenant, entry).await?;
        if inserted {
            add_to_balance(conn, tenant, entry).await?;
        }
        Ok(inserted)
    }
}

fn done(applied: bool) -> Done {
    Done::with_result(json!({"applied": applied}))
}

/// Applies one job; whether it was new.
async fn post(conn: &mut PgConnection, job: Job<'_, '_>) -> Result<bool, sqlx::Error> {
    sql::post(conn, job.id, tenant(job), &job.payload).await
}

/// Applies a group of distinct jobs at once: entries inserted together, balance changes
/// summed per (tenant, account, currency) and applied in a fixed order (so that concurrent
/// groups cannot deadlock). Returns which jobs were new.
async fn post_many(
    conn: &mut PgConnection,
    jobs: &[Job<'_, '_>],
) -> Result<HashSet<Uuid>, JobError> {
    let inserted: Vec<Uuid> = sqlx::query_scalar(sql::INSERT_ENTRIES)
        .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| tenant(j)).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .map(|j| j.payload.account.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            jobs.iter()
                .map(|j| j.payload.currency.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            jobs.iter()
                .map(|j| j.payload.amount_cents)
                .collect::<Vec<_>>(),
        )
        .bind(
            jobs.iter()
                .map(|j| j.payload.memo.as_deref())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await?;
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();

    let mut deltas: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    for job in jobs.iter().filter(|j| inserted.contains(&j.id)) {
        let entry = &job.payload;
        let delta = deltas
            .entry((tenant(job), &entry.account, &entry.currency))
            .or_default();
        // One by one, Postgres finds the job whose amount overflows.
        *delta = delta.checked_add(entry.amount_cents).ok_or_else(|| {
            JobError::permanent("a balance change of the group overflows 64 bits")
        })?;
    }
    if !deltas.is_empty() {
        sqlx::query(sql::UPSERT_BALANCES)
            .bind(deltas.keys().map(|(t, _, _)| *t).collect::<Vec<_>>())
            .bind(deltas.keys().map(|(_, a, _)| *a).collect::<Vec<_>>())
            .bind(deltas.keys().map(|(_, _, c)| *c).collect::<Vec<_>>())
            .bind(deltas.values().copied().collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
    }
    Ok(inserted)
}

#[async_trait]
impl Worker<LedgerPost> for LedgerPostWorker {
    const GROUPS: bool = true;

    #[tracing::instrument(name = "ledger_post", skip_all, fields(job_id = %job.id))]
    async fn work(&self, job: &JobCtx<'_, LedgerPost>, tx: &mut JobTx) -> Result<Done, JobError> {
        let applied = post(tx.conn().await?, job).await?;
        if !applied {
            tracing::info!(job_id = %job.id, "ledger entry already applied; redelivery ignored");
        }
        Ok(done(applied))
    }

    async fn work_group(
        &self,
        jobs: &[&JobCtx<'_, LedgerPost>],
        tx: &mut JobTx,
    ) -> Result<Vec<Done>, JobError> {
        let inserted = post_many(tx.conn().await?, jobs).await?;
        Ok(jobs
            .iter()
            .map(|j| done(inserted.contains(&j.id)))
            .collect())
    }
}
