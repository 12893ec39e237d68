//! One pull loop per job type: fetch as many jobs as there are free slots, gather the ones
//! that arrive together into groups, and hand each group to its own task.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use codigo_common::jetstream::{bind_job_consumer, PullConsumer};
use codigo_common::shutdown::Shutdown;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::execute::Group;
use super::settle::nak;
use super::{Serve, Shared};
use crate::events::Meters;
use crate::pause::pause;

/// Largest group handled in one go: beyond it a transaction only grows longer, while more
/// groups in flight overlap their round trips.
const MAX_GROUP: usize = 128;

/// How long a group waits for the rest of its pull to arrive before it is handled: a
/// transaction for 128 jobs costs about what one for 20 does, and under load a pull's
/// messages arrive over a few socket reads. At low rates it is the latency a job pays.
const GROUP_LINGER: Duration = Duration::from_millis(1);

/// How long a pull waits for a whole group's slots before it goes with the ones that are free.
/// Groups finish in one go and free their slots together, so under load this is rarely reached;
/// when it is, slow jobs hold the rest and the free slots must not wait for them.
const GROUP_WAIT: Duration = Duration::from_millis(20);

pub(crate) struct Puller {
    served: Arc<dyn Serve>,
    shared: Arc<Shared>,
    meters: Arc<Meters>,
    /// True while the durable consumer is bound (readiness).
    bound: Arc<AtomicBool>,
    /// The job type's slots, shared by its pull loops.
    slots: Arc<Semaphore>,
}

impl Puller {
    /// The pull loops of one job type ([`Shared::pull_loops`] of them), sharing its slots: while
    /// one loop waits for its pull to fill, another's jobs are being worked on, so the
    /// consumer is never idle waiting for a round trip to the server.
    pub fn loops(
        served: Arc<dyn Serve>,
        shared: Arc<Shared>,
        meters: Arc<Meters>,
        bound: Arc<AtomicBool>,
    ) -> Vec<Self> {
        let slots = Arc::new(Semaphore::new(shared.concurrency));
        (0..shared.pull_loops.max(1))
            .map(|_| Self {
                served: served.clone(),
                shared: shared.clone(),
                meters: meters.clone(),
                bound: bound.clone(),
                slots: slots.clone(),
            })
            .collect()
    }

    async fn bind(&self) -> Option<PullConsumer> {
        let shared = &self.shared;
        let job_type = self.served.job_type();
        match bind_job_consumer(&shared.js, &shared.names, &shared.jetstream, job_type).await {
            Ok(consumer) => Some(consumer),
            Err(error) => {
                tracing::warn!(job_type, %error, "cannot bind consumer; retrying");
                None
            }
        }
    }

    /// Waits for a free slot, then up to [`GROUP_WAIT`] for a whole group's: pulling each slot
    /// as it trickles free would keep every later group small, but waiting for a whole group
    /// would let a few slow jobs stop this worker. `None` at shutdown.
    async fn free_slots(
        &self,
        slots: &Arc<Semaphore>,
        group_size: usize,
        shutdown: &Shutdown,
    ) -> Option<OwnedSemaphorePermit> {
        let mut permits = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.ok()?,
            () = shutdown.cancelled() => return None,
        };
        while let Ok(more) = slots.clone().try_acquire_owned() {
            permits.merge(more);
        }
        if permits.num_permits() < group_size {
            let missing = u32::try_from(group_size - permits.num_permits()).unwrap_or(u32::MAX);
            tokio::select! {
                more = slots.clone().acquire_many_owned(missing) => permits.merge(more.ok()?),
                () = tokio::time::sleep(GROUP_WAIT) => {}
                () = shutdown.cancelled() => return None,
            }
            while let Ok(more) = slots.clone().try_acquire_owned() {
                permits.merge(more);
            }
        }
        Some(permits)
    }

    /// Pulls and processes until `shutdown`; then hands back what was fetched but not started,
    /// and gives in-flight jobs `drain_timeout` to finish before naking them too.
    pub async fn run(self, shutdown: Shutdown, drain_timeout: Duration) {
        let job_type = self.served.job_type();
        let slots = self.slots.clone();
        let group_size = self.shared.concurrency.min(MAX_GROUP);
        let hard_stop = Shutdown::new();
        let mut tasks = JoinSet::new();
        let mut consumer: Option<PullConsumer> = None;

        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let Some(mut permits) = self.free_slots(&slots, group_size, &shutdown).await else {
                break;
            };
            let bound = match consumer.take() {
                Some(c) => c,
                None => match self.bind().await {
                    Some(c) => c,
                    None => {
                        self.bound.store(false, Ordering::Relaxed);
                        pause(&shutdown, Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let batch = bound
                .batch()
                .max_messages(permits.num_permits())
                .expires(self.shared.fetch_expires)
                .messages()
                .await;
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(job_type, %error, "pull request failed; rebinding");
                    self.bound.store(false, Ordering::Relaxed);
                    pause(&shutdown, Duration::from_millis(500)).await;
                    continue;
                }
            };
            self.bound.store(true, Ordering::Relaxed);

            let mut healthy = true;
            let mut draining = false;
            // Messages that arrived together are handled together: one transaction for a
            // group of jobs instead of one per job.
            let mut batch = batch.fuse();
            loop {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled(), if !draining => { draining = true; continue; }
                    next = batch.next() => next,
                };
                let Some(first) = next else { break };
                let mut items = vec![first];
                let until = tokio::time::sleep(GROUP_LINGER);
                tokio::pin!(until);
                while items.len() < group_size {
                    tokio::select! {
                        biased;
                        next = batch.next() => match next {
                            Some(item) => items.push(item),
                            None => break,
                        },
                        () = &mut until => break,
                    }
                }
                let mut messages = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Ok(message) => messages.push(message),
                        Err(error) => {
                            tracing::warn!(job_type, %error, "message stream error; rebinding");
                            healthy = false;
                        }
                    }
                }
                if messages.is_empty() {
                    // Only stream errors arrived.
                } else if let Some(taken) = permits.split(messages.len()).filter(|_| !draining) {
                    for group in self.groups(messages, taken, &hard_stop) {
                        let served = self.served.clone();
                        tasks.spawn(async move { served.process(group).await });
                    }
                } else {
                    // Fetched after SIGTERM (or, impossibly, beyond the free slots): hand them
                    // back, delayed past this pull request's expiry so that they go to another
                    // replica rather than bouncing straight back into this draining one.
                    let delay = self.shared.fetch_expires + Duration::from_secs(1);
                    for message in &messages {
                        nak(&self.meters, message, delay).await;
                    }
                }
                if !healthy {
                    break;
                }
            }
            if healthy {
                consumer = Some(bound);
            } else {
                self.bound.store(false, Ordering::Relaxed);
            }
        }

        self.bound.store(false, Ordering::Relaxed);
        let in_flight = tasks.len();
        if in_flight > 0 {
            tracing::info!(job_type, in_flight, "draining in-flight jobs");
        }
        let drained = tokio::time::timeout(drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                job_type,
                "drain timeout reached; handing unfinished jobs back"
            );
            hard_stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
        tracing::info!(job_type, "worker stopped");
    }

    /// A worker that shares no work between jobs gets them one by one, so that a slow job
    /// holds only its own slot and delays no other.
    fn groups(
        &self,
        messages: Vec<jetstream::Message>,
        mut taken: OwnedSemaphorePermit,
        hard_stop: &Shutdown,
    ) -> Vec<Group> {
        let group = |messages, permits| Group {
            shared: self.shared.clone(),
            meters: self.meters.clone(),
            messages,
            permits,
            hard_stop: hard_stop.clone(),
        };
        if self.served.groups() {
            return vec![group(messages, taken)];
        }
        messages
            .into_iter()
            .filter_map(|message| taken.split(1).map(|slot| group(vec![message], slot)))
            .collect()
    }
}
