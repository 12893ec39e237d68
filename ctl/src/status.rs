use std::collections::BTreeMap;

use codigo_common::config::{DatabaseArgs, NatsArgs};
use codigo_common::declarations::Declarations;
use codigo_common::nats::InitialConnect;
use codigo_common::{jetstream, nats, Names};
use codigo_schemas::registry;
use futures::TryStreamExt;
use serde::Serialize;

use crate::Format;

#[derive(Debug, Serialize)]
struct TypeStatus {
    job_type: String,
    consumer: String,
    /// Delayed jobs waiting for their run_at.
    scheduled: u64,
    pending: u64,
    /// Jobs a worker holds now, and jobs waiting for a retry, from Postgres (`null` when it
    /// cannot be read).
    running: Option<i64>,
    retrying: Option<i64>,
    ack_pending: usize,
    redelivered: usize,
    waiting_pulls: usize,
    dead_letters: usize,
}

/// Running and retrying jobs per type, from their rows; `None` when Postgres cannot be read,
/// said on stderr (the stream's figures are worth showing all the same).
async fn in_progress(
    database: &DatabaseArgs,
    job_types: &[String],
) -> Option<BTreeMap<String, (i64, i64)>> {
    let counted = async {
        let pool = codigo_common::db::connect(database).await?;
        // No index covers `status` (the workers' updates of it stay on their page, migration
        // 0010): this scans the table, so it is given a bounded time rather than a free hand
        // on a busy primary.
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL statement_timeout = '10s'")
            .execute(&mut *tx)
            .await?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT type, count(*) FILTER (WHERE status = 'running'),
                    count(*) FILTER (WHERE status = 'retrying')
               FROM jobs WHERE type = ANY($1) AND status IN ('running', 'retrying')
              GROUP BY type",
        )
        .bind(job_types)
        .fetch_all(&mut *tx)
        .await?;
        anyhow::Ok(rows)
    };
    match counted.await {
        Ok(rows) => Some(
            rows.into_iter()
                .map(|(t, run, retry)| (t, (run, retry)))
                .collect(),
        ),
        Err(error) => {
            eprintln!(
                "running and retrying counts left out: Postgres could not count them ({error}); \
                 check DATABASE_URL, or run it off-peak or against a replica if the count timed out"
            );
            None
        }
    }
}

pub async fn run(
    nats_args: &NatsArgs,
    database: &DatabaseArgs,
    names: &Names,
    format: Format,
) -> anyhow::Result<()> {
    let client = nats::connect(nats_args, "codigo-ctl", InitialConnect::FailFast).await?;
    let js = async_nats::jetstream::new(client);
    let jobs = js.get_stream(names.jobs_stream()).await.map_err(|e| {
        anyhow::anyhow!(
            "stream {} not found ({e}); run `codigo-ctl setup`",
            names.jobs_stream()
        )
    })?;
    let dlq = js.get_stream(names.dlq_stream()).await?;
    let dead: BTreeMap<String, usize> = dlq
        .info_with_subjects(names.dlq_wildcard())
        .await?
        .try_collect()
        .await?;

    // Declared types too; a namespace set up before they existed has no bucket yet.
    let declared = match Declarations::open(&js, names).await {
        Ok(declarations) => declarations.snapshot().await?.0,
        Err(_) => Vec::new(),
    };
    let job_types: Vec<String> = registry()
        .names()
        .map(str::to_owned)
        .chain(declared.into_iter().map(|d| d.name))
        .collect();
    let in_progress = in_progress(database, &job_types).await;
    let mut rows = Vec::new();
    for job_type in job_types {
        let counts = in_progress
            .as_ref()
            .map(|counts| counts.get(&job_type).copied().unwrap_or((0, 0)));
        let job_type = job_type.as_str();
        let consumer = names.durable(job_type);
        let info = jobs.consumer_info(&consumer).await.ok();
        rows.push(TypeStatus {
            job_type: job_type.to_owned(),
            scheduled: jetstream::scheduled_count(&js, names, job_type)
                .await
                .unwrap_or(0),
            pending: info.as_ref().map_or(0, |i| i.num_pending),
            running: counts.map(|(running, _)| running),
            retrying: counts.map(|(_, retrying)| retrying),
            ack_pending: info.as_ref().map_or(0, |i| i.num_ack_pending),
            redelivered: info.as_ref().map_or(0, |i| i.num_redelivered),
            waiting_pulls: info.as_ref().map_or(0, |i| i.num_waiting),
            dead_letters: dead.get(&names.dlq_subject(job_type)).copied().unwrap_or(0),
            consumer: if info.is_some() {
                consumer
            } else {
                format!("{consumer} (missing)")
            },
        });
    }

    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            let count = |n: Option<i64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
            println!(
                "{:<24} {:<34} {:>10} {:>10} {:>8} {:>9} {:>12} {:>12} {:>8} {:>13}",
                "JOB TYPE",
                "CONSUMER",
                "SCHEDULED",
                "PENDING",
                "RUNNING",
                "RETRYING",
                "ACK PENDING",
                "REDELIVERED",
                "PULLS",
                "DEAD LETTERS"
            );
            for r in &rows {
                println!(
                    "{:<24} {:<34} {:>10} {:>10} {:>8} {:>9} {:>12} {:>12} {:>8} {:>13}",
                    r.job_type,
                    r.consumer,
                    r.scheduled,
                    r.pending,
                    count(r.running),
                    count(r.retrying),
                    r.ack_pending,
                    r.redelivered,
                    r.waiting_pulls,
                    r.dead_letters
                );
            }
        }
    }
    Ok(())
}
