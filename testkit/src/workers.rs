//! Handlers a test puts in place of the real ones, to steer a job down one path.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use codigo_consumer::runtime::{Done, JobCtx, JobError, JobTx, Worker};
use codigo_schemas::JobKind;

/// Fails every job transiently, to be retried after `delay`: a target that never recovers.
/// Clones share one count of calls, so that the replicas of a test are watched together.
#[derive(Clone)]
pub struct AlwaysRetry {
    delay: Duration,
    error: &'static str,
    calls: Arc<AtomicUsize>,
}

impl AlwaysRetry {
    pub fn after(delay: Duration, error: &'static str) -> Self {
        Self {
            delay,
            error,
            calls: Arc::default(),
        }
    }

    /// How many jobs this handler and its clones were given so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<K: JobKind> Worker<K> for AlwaysRetry {
    async fn work(&self, _job: &JobCtx<'_, K>, _tx: &mut JobTx) -> Result<Done, JobError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(JobError::retry_after(Some(self.delay), self.error))
    }
}
