//! `GET /v1/jobs/{id}?wait=`: requests held until their job reaches a final state.
//!
//! One task looks up every waited-for job in a single indexed query per round, so Postgres
//! sees the same load for ten waiting requests as for ten thousand, and a waiting request
//! costs a map entry and a oneshot channel, not a connection or a task of its own.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use codigo_common::contract::JobState;
use codigo_common::shutdown::Shutdown;
use sqlx::PgPool;
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

/// How often the waited-for jobs are looked up: the most a waiter hears of its job late.
const ROUND: Duration = Duration::from_millis(100);

/// More requests are waiting than `CODIGO_MAX_WAITING_REQUESTS` allows.
#[derive(Debug, thiserror::Error)]
#[error("{0} requests are waiting for their jobs already, the most this gateway holds")]
pub struct TooManyWaiting(pub usize);

#[derive(Clone)]
pub struct Waiters {
    inner: Arc<Inner>,
}

struct Inner {
    waiting: Mutex<Waiting>,
    /// Wakes the round task when the first waiter arrives.
    arrived: Notify,
    limit: usize,
    /// Set when the gateway begins to drain: waiters are answered at once from then on.
    stopped: Shutdown,
}

#[derive(Default)]
struct Waiting {
    by_job: HashMap<Uuid, Vec<oneshot::Sender<()>>>,
    count: usize,
}

impl Waiting {
    /// Forgets the waiters whose requests ended (their wait ran out or the client left).
    fn prune(&mut self) {
        self.by_job.retain(|_, senders| {
            senders.retain(|sender| !sender.is_closed());
            !senders.is_empty()
        });
        self.count = self.by_job.values().map(Vec::len).sum();
    }

    /// Answers every waiter of `id`.
    fn release(&mut self, id: &Uuid) {
        if let Some(senders) = self.by_job.remove(id) {
            self.count -= senders.len();
            for sender in senders {
                let _ = sender.send(());
            }
        }
    }
}

impl Waiters {
    /// Starts the round task, which runs until [`stop`](Self::stop).
    pub fn start(pool: PgPool, limit: usize) -> Self {
        let waiters = Self {
            inner: Arc::new(Inner {
                waiting: Mutex::new(Waiting::default()),
                arrived: Notify::new(),
                limit,
                stopped: Shutdown::new(),
            }),
        };
        tokio::spawn(waiters.clone().rounds(pool));
        waiters
    }

    /// Answers every waiter now and every later one at once, so that a draining gateway does
    /// not hold requests for their whole wait.
    pub fn stop(&self) {
        self.inner.stopped.cancel();
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.waiting().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until job `id` may have reached a final state, or `limit` has passed; the caller
    /// reads the job's state afterwards either way.
    pub async fn wait(&self, id: Uuid, limit: Duration) -> Result<(), TooManyWaiting> {
        if self.inner.stopped.is_cancelled() {
            return Ok(());
        }
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiting = self.waiting();
            if waiting.count >= self.inner.limit {
                waiting.prune();
                if waiting.count >= self.inner.limit {
                    return Err(TooManyWaiting(waiting.count));
                }
            }
            waiting.by_job.entry(id).or_default().push(sender);
            waiting.count += 1;
        }
        self.inner.arrived.notify_one();
        let _ = tokio::time::timeout(limit, receiver).await;
        Ok(())
    }

    async fn rounds(self, pool: PgPool) {
        let shutdown = self.inner.stopped.clone();
        let finals: Vec<&'static str> = JobState::ALL
            .iter()
            .filter(|state| state.is_final())
            .map(|state| state.as_str())
            .collect();
        loop {
            if self.is_empty() {
                tokio::select! {
                    () = self.inner.arrived.notified() => {}
                    () = shutdown.cancelled() => break,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(ROUND) => {}
                () = shutdown.cancelled() => break,
            }
            let ids: Vec<Uuid> = {
                let mut waiting = self.waiting();
                waiting.prune();
                waiting.by_job.keys().copied().collect()
            };
            if ids.is_empty() {
                continue;
            }
            match sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM jobs WHERE id = ANY($1) AND status = ANY($2)",
            )
            .bind(&ids)
            .bind(&finals)
            .fetch_all(&pool)
            .await
            {
                Ok(done) => {
                    let mut waiting = self.waiting();
                    for id in &done {
                        waiting.release(id);
                    }
                }
                // The waiters answer with what they can read when their wait ends.
                Err(error) => tracing::warn!(%error, "cannot look up the jobs requests wait for"),
            }
        }
        let mut waiting = self.waiting();
        let ids: Vec<Uuid> = waiting.by_job.keys().copied().collect();
        for id in &ids {
            waiting.release(id);
        }
    }
}
