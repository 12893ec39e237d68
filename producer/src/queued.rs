//! The `queued` rows of accepted jobs: written before the 202, so that `GET /v1/jobs/{id}`
//! knows a job from the moment it is accepted, not only once a worker has seen it.
//!
//! One task groups them, a group per statement: whatever requests arrived while the previous
//! statements ran go together, so the cost per job falls as the load rises. A row never
//! delays a job for long: JetStream has it already, and a write that fails or is slow only
//! leaves the job unknown to `GET` until a worker records it.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::events::QueuedNotRecorded;

/// Longest a request waits for its rows before it answers anyway.
const WRITE_WAIT: Duration = Duration::from_secs(1);
/// Most rows in one statement.
const MAX_GROUP_ROWS: usize = 4096;
/// Statements in flight at once, one per connection of the marks pool: while one is on its
/// way, the next group grows.
const MAX_STATEMENTS: usize = codigo_common::db::MARK_CONNECTIONS as usize;
/// Requests queued for the writer before more are answered without their rows.
const MAX_WAITING_REQUESTS: usize = 4096;

/// An accepted job as JetStream stored it.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    /// The published envelope (JSON): Postgres takes its fields from it.
    pub envelope: Bytes,
    /// Its sequence in the work stream; none for a delayed job, stored in the schedules
    /// stream until it is due.
    pub sequence: Option<u64>,
}

struct Request {
    jobs: Vec<QueuedJob>,
    written: oneshot::Sender<Result<(), String>>,
}

/// Hands accepted jobs to the writer task.
#[derive(Clone)]
pub struct QueuedJobs {
    requests: mpsc::Sender<Request>,
    /// Whether the last statement succeeded. While Postgres fails, requests do not wait for
    /// their rows (each would add [`WRITE_WAIT`] to its answer); the writer keeps trying.
    writing: Arc<AtomicBool>,
}

impl QueuedJobs {
    /// Starts the writer on `marks` (`db::lazy_marks_pool`); it ends when every handle is
    /// dropped.
    pub fn start(marks: PgPool) -> Self {
        QueuedNotRecorded::register();
        let (requests, receiver) = mpsc::channel(MAX_WAITING_REQUESTS);
        let writing = Arc::new(AtomicBool::new(true));
        tokio::spawn(write_groups(marks, receiver, writing.clone()));
        Self { requests, writing }
    }

    /// Records `jobs` as queued, waiting at most [`WRITE_WAIT`]. A job a worker has recorded
    /// meanwhile keeps its row. Failures are counted and logged, never returned: the jobs are
    /// accepted whatever happens here.
    pub async fn record(&self, jobs: Vec<QueuedJob>) {
        if jobs.is_empty() {
            return;
        }
        let count = jobs.len();
        let (written, outcome) = oneshot::channel();
        let reason = match self.requests.try_send(Request { jobs, written }) {
            Err(_) => "the writer is behind".to_owned(),
            Ok(()) if !self.writing.load(Ordering::Relaxed) => {
                // Written when Postgres is back, if it is back soon; not waited for.
                "the last write failed".to_owned()
            }
            Ok(()) => match tokio::time::timeout(WRITE_WAIT, outcome).await {
                Ok(Ok(Ok(()))) => return,
                Ok(Ok(Err(error))) => error,
                Ok(Err(_)) => "the writer stopped".to_owned(),
                Err(_) => format!("not written within {WRITE_WAIT:?}"),
            },
        };
        QueuedNotRecorded {
            jobs: count,
            reason: &reason,
        }
        .emit();
    }
}

async fn write_groups(
    pool: PgPool,
    mut requests: mpsc::Receiver<Request>,
    writing: Arc<AtomicBool>,
) {
    let statements = Arc::new(Semaphore::new(MAX_STATEMENTS));
    while let Some(first) = requests.recv().await {
        // While every statement is in flight, requests keep arriving and the next group grows.
        let Ok(statement) = statements.clone().acquire_owned().await else {
            return;
        };
        let mut group = vec![first];
        let mut rows = group[0].jobs.len();
        while rows < MAX_GROUP_ROWS {
            match requests.try_recv() {
                Ok(request) => {
                    rows += request.jobs.len();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        let (pool, writing) = (pool.clone(), writing.clone());
        tokio::spawn(async move {
            let outcome = insert(&pool, &group).await.map_err(|e| e.to_string());
            writing.store(outcome.is_ok(), Ordering::Relaxed);
            for request in group {
                let _ = request.written.send(outcome.clone());
            }
            drop(statement);
        });
    }
}

/// One statement for the whole group, in id order so that concurrent writers of the same
/// ids (a resubmission racing its original) lock them in the same order.
async fn insert(pool: &PgPool, group: &[Request]) -> Result<(), sqlx::Error> {
    let (envelopes, sequences): (Vec<&str>, Vec<Option<i64>>) = group
        .iter()
        .flat_map(|request| &request.jobs)
        .filter_map(|job| {
            let envelope = std::str::from_utf8(&job.envelope).ok()?;
            Some((
                envelope,
                job.sequence.and_then(|seq| i64::try_from(seq).ok()),
            ))
        })
        .unzip();
    // `pool` commits without waiting for the WAL flush: a row lost to a Postgres crash only
    // leaves its job unknown to GET until a worker records it, as an unwritten one does;
    // JetStream, not this row, is what holds the job. Each envelope is parsed once, by the
    // array cast: a `LATERAL (SELECT envelope::jsonb)` would be flattened into every field
    // that reads it, parsing the envelope once per field (2.5 times the server time of the
    // statement, measured on 200,000 rows).
    sqlx::query(
        "INSERT INTO jobs (id, type, status, attempts, payload, idempotency_key, tenant,
                           created_at, stream_sequence, run_at, callback_url, expires_at)
         SELECT (e->>'id')::uuid, e->>'type',
                CASE WHEN e->>'run_at' IS NULL THEN 'queued' ELSE 'scheduled' END, 0,
                e->'payload', e->>'idempotency_key', e->>'tenant',
                (e->>'created_at')::timestamptz, sequence, (e->>'run_at')::timestamptz,
                e->>'callback_url', (e->>'expires_at')::timestamptz
           FROM UNNEST($1::text[]::jsonb[], $2::bigint[]) AS t(e, sequence)
          ORDER BY 1
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(envelopes)
    .bind(sequences)
    .execute(pool)
    .await
    .map(drop)
}
