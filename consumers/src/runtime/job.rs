//! What a worker is given of a job and what it answers: the [`Worker`] trait, a job's typed
//! [`JobCtx`], its lazily opened transaction [`JobTx`], and the outcomes [`Done`] and
//! [`JobError`].
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

use crate::db_failure::{DbErrorClass, DbFailure};

/// A job handed to its worker: the typed payload and what the envelope says about it.
#[derive(Debug)]
pub struct JobCtx<'a, K> {
    pub id: Uuid,
    pub payload: K,
    /// 1 for the first delivery.
    pub attempt: u64,
    pub tenant: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub created_at: OffsetDateTime,
}

/// What a job's payload decodes into: a kind's payload type ([`codigo_schemas::JobKind`]), or
/// plain JSON for a type declared at run time.
pub trait Payload: DeserializeOwned + Send + Sync + 'static {}

impl<T: DeserializeOwned + Send + Sync + 'static> Payload for T {}

/// The work of one job kind. The runtime decodes each job into its kind, opens the
/// transaction the worker writes its effects in, records the job's row in that same
/// transaction, commits, and then acknowledges: a worker cannot forget to record its job.
///
/// Effects in Postgres are applied once per job id (`ON CONFLICT (job_id) DO NOTHING` and the
/// like): a job can be delivered again after its commit, if the process dies before its ack.
#[async_trait]
pub trait Worker<K: Payload>: Send + Sync + 'static {
    /// Whether the work reaches outside Postgres (an HTTP request) and so cannot be rolled
    /// back. Its ack then waits for JetStream's confirmation, since an ack lost on the way
    /// means a redelivery, and a success that cannot be recorded is held and recorded later,
    /// never dead-lettered (a replay would repeat the work).
    const OUTSIDE_EFFECTS: bool = false;

    /// Whether jobs that arrived together go to [`Worker::work_group`] in one transaction.
    /// Otherwise each job has its own slot and transaction, so that a slow job delays no other.
    const GROUPS: bool = false;

    /// Does one job. Its effects go through `tx`; nothing is committed unless this returns
    /// [`Done`].
    async fn work(&self, job: &JobCtx<'_, K>, tx: &mut JobTx) -> Result<Done, JobError>;

    /// Does a group of jobs with distinct ids in one transaction, one [`Done`] per job in
    /// order. All or nothing: an error other than [`ErrorKind::Unavailable`] sends the jobs
    /// through [`Worker::work`] one by one, which finds the job at fault.
    async fn work_group(
        &self,
        jobs: &[&JobCtx<'_, K>],
        tx: &mut JobTx,
    ) -> Result<Vec<Done>, JobError> {
        let mut done = Vec::with_capacity(jobs.len());
        for job in jobs {
            done.push(self.work(job, tx).await?);
        }
        Ok(done)
    }

    /// Whether this job may join a group; one that may not goes through [`Worker::work`].
    fn may_group(&self, _job: &JobCtx<'_, K>) -> bool {
        true
    }

    /// The job's success is committed and its ack is about to leave.
    fn committed(&self, _job: &JobCtx<'_, K>) {}
}

/// A shared worker is a worker: the process and its caller may both hold it.
#[async_trait]
impl<K: Payload, W: Worker<K>> Worker<K> for std::sync::Arc<W> {
    const OUTSIDE_EFFECTS: bool = W::OUTSIDE_EFFECTS;
    const GROUPS: bool = W::GROUPS;

    async fn work(&self, job: &JobCtx<'_, K>, tx: &mut JobTx) -> Result<Done, JobError> {
        (**self).work(job, tx).await
    }

    async fn work_group(
        &self,
        jobs: &[&JobCtx<'_, K>],
        tx: &mut JobTx,
    ) -> Result<Vec<Done>, JobError> {
        (**self).work_group(jobs, tx).await
    }

    fn may_group(&self, job: &JobCtx<'_, K>) -> bool {
        (**self).may_group(job)
    }

    fn committed(&self, job: &JobCtx<'_, K>) {
        (**self).committed(job);
    }
}

/// A job's transaction, begun when the worker first asks for it: work that never touches
/// Postgres before an HTTP request holds no connection meanwhile.
pub struct JobTx {
    pool: PgPool,
    open: Option<(Transaction<'static, Postgres>, tracing::Span)>,
}

impl JobTx {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool, open: None }
    }

    /// The transaction's connection, beginning the transaction on first use.
    pub async fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.open.is_none() {
            let span = tracing::info_span!("postgres_tx");
            let tx = self.pool.begin().instrument(span.clone()).await?;
            self.open = Some((tx, span));
        }
        match &mut self.open {
            Some((tx, _)) => Ok(&mut **tx),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self.open {
            Some((tx, span)) => tx.commit().instrument(span).await,
            None => Ok(()),
        }
    }
}

/// A job done; its result goes to `jobs.result` (GET /v1/jobs/{id}).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Done {
    result: Option<Value>,
}

impl Done {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_result(result: Value) -> Self {
        Self {
            result: Some(result),
        }
    }

    pub fn result(&self) -> Option<&Value> {
        self.result.as_ref()
    }

    pub(crate) fn into_result(self) -> Option<Value> {
        self.result
    }
}

/// What kind of failure a job met, which decides what becomes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth trying again later: nak with this delay, or the retry policy's.
    Retry { after: Option<Duration> },
    /// Will fail the same way every time: dead-letter and term.
    Permanent,
    /// A dependency is down, not the job at fault: the job is held and tried again without
    /// spending one of its deliveries.
    Unavailable,
}

/// Why a job did not succeed: a [`ErrorKind`] and a message for the people who read the
/// dead letter, the jobs row and the logs (say what to do about it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    kind: ErrorKind,
    message: String,
}

impl JobError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn retry(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retry { after: None }, message)
    }

    pub fn retry_after(after: Option<Duration>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retry { after }, message)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Judged by SQLSTATE (see [`DbFailure`]): transient errors and a broken deployment hold the
/// job, an error in the job's own data fails it for good.
impl From<DbFailure> for JobError {
    fn from(failure: DbFailure) -> Self {
        let failure = failure.observed();
        let kind = match failure.class() {
            DbErrorClass::Job => ErrorKind::Permanent,
            DbErrorClass::Transient | DbErrorClass::Deployment => ErrorKind::Unavailable,
        };
        Self::new(kind, failure.to_string())
    }
}

impl From<sqlx::Error> for JobError {
    fn from(error: sqlx::Error) -> Self {
        DbFailure::from(error).into()
    }
}
