//! End-to-end latency: from a job's `created_at` (set when the producer, or this tool for
//! direct publishes, built its envelope) to `finished_at` on its committed `jobs` row.
//!
//! Postgres is the source of truth: a row exists only once the job's effects committed, its
//! id ties it to exactly one accepted job, and redeliveries cannot count twice. While the run
//! goes on, the work stream's message count (a WorkQueue stream drops a job once acked, and a
//! worker acks only after commit) says cheaply how much is still in flight; rows are read once
//! at the end.
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use codigo_common::contract::JobState;
use futures::TryStreamExt;
use hdrhistogram::Histogram;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::LoadError;
use crate::stats::histogram;
use crate::AbortOnDrop;

/// Jobs stored in the work stream and not yet acknowledged, polled in the background.
#[derive(Debug, Clone)]
pub struct Backlog {
    value: Arc<AtomicU64>,
    _poller: Arc<AbortOnDrop>,
}

/// Backlog not known yet (first poll pending, or the stream unreachable).
const UNKNOWN: u64 = u64::MAX;

impl Backlog {
    /// Polls the stream every `every`; stops when the last clone is dropped.
    pub async fn watch(
        js: &jetstream::Context,
        stream: &str,
        every: Duration,
    ) -> Result<Self, LoadError> {
        let mut handle = js
            .get_stream(stream)
            .await
            .map_err(|e| LoadError::jetstream(format!("cannot find stream {stream}"), e))?;
        let value = Arc::new(AtomicU64::new(handle.cached_info().state.messages));
        let shared = value.clone();
        let task = tokio::spawn(async move {
            loop {
                match handle.info().await {
                    Ok(info) => shared.store(info.state.messages, Ordering::Relaxed),
                    Err(error) => {
                        tracing::debug!(%error, "stream info failed");
                        shared.store(UNKNOWN, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Ok(Self {
            value,
            _poller: Arc::new(AbortOnDrop(task)),
        })
    }

    /// Messages in the stream at the last poll.
    pub fn get(&self) -> Option<u64> {
        match self.value.load(Ordering::Relaxed) {
            UNKNOWN => None,
            n => Some(n),
        }
    }
}

/// What the `jobs` table says about the accepted jobs of a run.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Rows with status `succeeded`.
    pub completed: u64,
    /// Rows with status `failed` or `dead_lettered`.
    pub failed: u64,
    pub e2e: Histogram<u64>,
    /// When the last of them was committed.
    pub last_finished: Option<OffsetDateTime>,
}

/// Reads the finished rows of `ids` (jobs created at or after `since`).
pub async fn gather(
    pool: &PgPool,
    ids: &HashSet<Uuid>,
    since: OffsetDateTime,
) -> Result<Completion, LoadError> {
    let mut completion = Completion {
        completed: 0,
        failed: 0,
        e2e: histogram(),
        last_finished: None,
    };
    // Clocks of one machine; the slack covers a producer whose clock is a little behind ours.
    let since = since - Duration::from_secs(5);
    let mut rows = sqlx::query_as::<_, (Uuid, JobState, i64, OffsetDateTime)>(
        "SELECT id, status,
                (extract(epoch FROM finished_at - created_at) * 1000000)::bigint,
                finished_at
           FROM jobs
          WHERE created_at >= $1 AND finished_at IS NOT NULL",
    )
    .bind(since)
    .fetch(pool);
    while let Some((id, status, e2e_us, finished)) = rows
        .try_next()
        .await
        .map_err(|e| LoadError::postgres("reading finished jobs", e))?
    {
        if !ids.contains(&id) {
            continue;
        }
        if status == JobState::Succeeded {
            completion.completed += 1;
            completion
                .e2e
                .saturating_record(u64::try_from(e2e_us).unwrap_or(0).max(1));
            completion.last_finished = Some(
                completion
                    .last_finished
                    .map_or(finished, |f| f.max(finished)),
            );
        } else {
            completion.failed += 1;
        }
    }
    Ok(completion)
}

/// Waits until every accepted job has a finished row (or `timeout`), then reads them.
pub async fn wait_and_gather(
    pool: &PgPool,
    backlog: Option<&Backlog>,
    ids: &HashSet<Uuid>,
    since: OffsetDateTime,
    timeout: Duration,
) -> Result<Completion, LoadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let expected = u64::try_from(ids.len()).unwrap_or(u64::MAX);
    loop {
        let timed_out = tokio::time::Instant::now() >= deadline;
        // Reading rows is costly while the pipeline is busy; the stream says when it is not.
        let drained = backlog.is_none_or(|b| b.get() == Some(0));
        if drained || timed_out {
            let completion = gather(pool, ids, since).await?;
            if completion.completed + completion.failed >= expected || timed_out {
                return Ok(completion);
            }
        }
        tokio::time::sleep(Duration::from_millis(if drained { 500 } else { 100 })).await;
    }
}
