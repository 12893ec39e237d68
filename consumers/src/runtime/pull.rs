//! The pull loops of a job type: one fetcher per lane keeps a few of its jobs at hand, and one
//! dispatcher starts them in the fair rotation (`fair`) as slots free, in groups.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::AckKind;
use codigo_common::jetstream::{bind_lane_consumer, PullConsumer};
use codigo_common::lanes::Lane;
use codigo_common::shutdown::Shutdown;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::admission;
use super::execute::Group;
use super::fair::FairQueue;
use super::settle::nak;
use super::{Serve, Shared};
use crate::events::Meters;
use crate::pause::pause;

/// Largest group handled in one go: beyond it a transaction only grows longer, while more
/// groups in flight overlap their round trips.
const MAX_GROUP: usize = 128;

/// Most jobs a lane keeps fetched and not started: two groups, so that one is at hand while
/// the next is on its way, and a tenant's flood holds no more than that on this worker.
const MAX_PREFETCH: usize = 2 * MAX_GROUP;

/// How long a group waits for the rest of its pull to arrive before it is handled: a
/// transaction for 128 jobs costs about what one for 20 does, and under load a pull's
/// messages arrive over a few socket reads. At low rates it is the latency a job pays.
const GROUP_LINGER: Duration = Duration::from_millis(1);

/// How long a pull waits for a whole group's slots before it goes with the ones that are free.
/// Groups finish in one go and free their slots together, so under load this is rarely reached;
/// when it is, slow jobs hold the rest and the free slots must not wait for them.
const GROUP_WAIT: Duration = Duration::from_millis(20);

/// How often a type's lanes on the server are compared with the ones served here.
const LANE_SCAN: Duration = Duration::from_secs(5);

/// Longest wait before a limited tenant's held-back jobs are looked at again: another replica
/// may have freed places in flight meanwhile.
const LIMIT_POLL: Duration = Duration::from_millis(100);

enum Role {
    /// Starts the fetched jobs as slots free.
    Dispatch,
    /// Keeps the lane's fetched jobs topped up.
    Fetch(Lane),
    /// Serves the lanes that hold jobs but are not listed here.
    Discover,
}

pub(crate) struct Puller {
    served: Arc<dyn Serve>,
    shared: Arc<Shared>,
    meters: Arc<Meters>,
    /// True while the default lane's durable consumer is bound (readiness).
    bound: Arc<AtomicBool>,
    /// The job type's slots.
    slots: Arc<Semaphore>,
    queue: Arc<FairQueue<jetstream::Message>>,
    role: Role,
}

impl Puller {
    /// The loops of one job type: a fetcher for each of its lanes (`CODIGO_TENANTS`) and the
    /// dispatcher that shares the type's slots among them.
    pub fn loops(
        served: Arc<dyn Serve>,
        shared: Arc<Shared>,
        meters: Arc<Meters>,
        bound: Arc<AtomicBool>,
    ) -> Vec<Self> {
        let slots = Arc::new(Semaphore::new(shared.concurrency));
        let tenants = shared.tenants.current();
        let lanes = tenants.lanes();
        let queue = Arc::new(FairQueue::new(
            lanes
                .iter()
                .map(|lane| (lane.clone(), tenants.weight(lane))),
        ));
        let roles = [Role::Dispatch, Role::Discover]
            .into_iter()
            .chain(lanes.into_iter().map(Role::Fetch));
        roles
            .map(|role| Self {
                served: served.clone(),
                shared: shared.clone(),
                meters: meters.clone(),
                bound: bound.clone(),
                slots: slots.clone(),
                queue: queue.clone(),
                role,
            })
            .collect()
    }

    async fn bind(&self, lane: &Lane) -> Option<PullConsumer> {
        let shared = &self.shared;
        let job_type = self.served.job_type();
        let bound =
            bind_lane_consumer(&shared.js, &shared.names, &shared.jetstream, job_type, lane).await;
        match bound {
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

    /// Runs until `shutdown`: see [`Role`].
    pub async fn run(self, shutdown: Shutdown, drain_timeout: Duration) {
        match &self.role {
            Role::Dispatch => self.dispatch(shutdown, drain_timeout).await,
            Role::Fetch(lane) => self.fetch(lane, shutdown).await,
            Role::Discover => self.discover(shutdown).await,
        }
    }

    /// Every [`LANE_SCAN`], looks for lanes of this type holding jobs that no fetcher here
    /// pulls, and starts one for each: a tenant dropped from `CODIGO_TENANTS` (or listed at the
    /// gateway first) still has its queued jobs run, with weight 1.
    async fn discover(&self, shutdown: Shutdown) {
        let job_type = self.served.job_type();
        let names = &self.shared.names;
        let mut tenants = self.shared.tenants.clone();
        let mut known: std::collections::BTreeSet<Lane> =
            tenants.current().lanes().into_iter().collect();
        let mut fetchers = JoinSet::new();
        let filter = format!("{}.*.*", names.job_subject(job_type));
        loop {
            let changed = tokio::select! {
                () = tokio::time::sleep(LANE_SCAN) => false,
                changed = tenants.changed() => changed,
                () = shutdown.cancelled() => break,
            };
            let mut found: Vec<(Lane, bool)> = Vec::new();
            if changed {
                // Tenants listed since the start get their lanes at once, and every tenant its
                // new weight.
                let current = tenants.current();
                self.queue.set_weights(|t| current.weight_of(t));
                found.extend(current.lanes().into_iter().map(|lane| (lane, true)));
            } else if let Ok(stream) = self.shared.js.get_stream_no_info(names.jobs_stream()).await
            {
                if let Ok(subjects) = stream.info_with_subjects(&filter).await {
                    let subjects: Vec<(String, usize)> =
                        subjects.filter_map(|s| async { s.ok() }).collect().await;
                    found.extend(subjects.into_iter().filter_map(|(subject, _)| {
                        let (of_type, lane) = names.lane_of(&subject)?;
                        (of_type == job_type).then_some((lane, false))
                    }));
                }
            }
            for (lane, listed) in found {
                if known.contains(&lane) {
                    continue;
                }
                if !listed {
                    let tenant = lane.tenant.as_deref().unwrap_or("*");
                    tracing::warn!(
                        job_type,
                        tenant,
                        "serving a lane whose tenant is not in CODIGO_TENANTS here"
                    );
                }
                known.insert(lane.clone());
                let weight = tenants.current().weight(&lane);
                self.queue.add_lane(lane.clone(), weight);
                let fetcher = Self {
                    served: self.served.clone(),
                    shared: self.shared.clone(),
                    meters: self.meters.clone(),
                    bound: self.bound.clone(),
                    slots: self.slots.clone(),
                    queue: self.queue.clone(),
                    role: Role::Discover,
                };
                let shutdown = shutdown.clone();
                fetchers.spawn(async move { fetcher.fetch(&lane, shutdown).await });
            }
        }
        while fetchers.join_next().await.is_some() {}
    }

    /// A fetched job this worker will not start: handed back, delayed past a pull request's
    /// expiry so that it goes to another replica rather than straight back to this draining one.
    async fn hand_back(&self, message: &jetstream::Message) {
        nak(
            &self.meters,
            message,
            self.shared.fetch_expires + Duration::from_secs(1),
        )
        .await;
    }

    /// How many of the lane's jobs to keep fetched: fewer for a tenant whose concurrency is
    /// limited, whose jobs would only wait here while another replica has room.
    fn prefetch(&self, lane: &Lane) -> usize {
        let mut prefetch = self.shared.concurrency.clamp(1, MAX_PREFETCH);
        if let Some(tenant) = lane.tenant.as_deref() {
            let (own, of_type) = self
                .shared
                .tenants
                .current()
                .limits(tenant, self.served.job_type());
            for limit in [own.concurrency, of_type.concurrency].into_iter().flatten() {
                prefetch = prefetch.min(usize::try_from(limit).unwrap_or(usize::MAX));
            }
        }
        prefetch.max(1)
    }

    /// Keeps up to [`MAX_PREFETCH`] of the lane's jobs fetched, pulling again once half are
    /// taken, until `shutdown`.
    async fn fetch(&self, lane: &Lane, shutdown: Shutdown) {
        let job_type = self.served.job_type();
        let readiness = lane.is_default();
        let mut consumer: Option<PullConsumer> = None;
        while !shutdown.is_cancelled() {
            let prefetch = self.prefetch(lane);
            tokio::select! {
                () = self.queue.until_at_most(lane, prefetch / 2) => {}
                () = shutdown.cancelled() => break,
            }
            let waiting = self.queue.waiting_in(lane);
            let bound = match consumer.take() {
                Some(c) => c,
                None => match self.bind(lane).await {
                    Some(c) => c,
                    None => {
                        if readiness {
                            self.bound.store(false, Ordering::Relaxed);
                        }
                        pause(&shutdown, Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let batch = bound
                .batch()
                .max_messages(prefetch - waiting)
                .expires(self.shared.fetch_expires)
                .messages()
                .await;
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(job_type, %error, "pull request failed; rebinding");
                    if readiness {
                        self.bound.store(false, Ordering::Relaxed);
                    }
                    pause(&shutdown, Duration::from_millis(500)).await;
                    continue;
                }
            };
            if readiness {
                self.bound.store(true, Ordering::Relaxed);
            }
            // Read the pull to its end even after SIGTERM: what it still brings is handed back.
            let mut healthy = true;
            let mut batch = std::pin::pin!(batch);
            while let Some(item) = batch.next().await {
                match item {
                    Ok(message) => {
                        if let Err(message) = self.queue.push(lane, message) {
                            self.hand_back(&message).await;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(job_type, %error, "message stream error; rebinding");
                        healthy = false;
                        break;
                    }
                }
            }
            if healthy {
                consumer = Some(bound);
            } else if readiness {
                self.bound.store(false, Ordering::Relaxed);
            }
        }
        if readiness {
            self.bound.store(false, Ordering::Relaxed);
        }
    }

    /// Starts the fetched jobs in the fair rotation as slots free, until `shutdown`; then hands
    /// back what was fetched but not started, and gives in-flight jobs `drain_timeout` to
    /// finish before naking them too.
    async fn dispatch(&self, shutdown: Shutdown, drain_timeout: Duration) {
        let job_type = self.served.job_type();
        let group_size = self.shared.concurrency.min(MAX_GROUP);
        // Jobs waiting for a slot for a third of the ack wait tell the server they are alive.
        let keep_alive = self.shared.jetstream.ack_wait / 3;
        let mut last_touch = tokio::time::Instant::now();
        let hard_stop = Shutdown::new();
        let mut tasks = JoinSet::new();

        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            if last_touch.elapsed() >= keep_alive / 2 {
                last_touch = tokio::time::Instant::now();
                self.touch_waiting(keep_alive).await;
            }
            let Some(mut permits) = self.free_slots(&self.slots, group_size, &shutdown).await
            else {
                break;
            };
            tokio::select! {
                () = self.queue.until_any() => {}
                () = tokio::time::sleep(keep_alive / 2) => continue,
                () = shutdown.cancelled() => break,
            }
            if self.queue.waiting() < permits.num_permits().min(group_size) {
                // Let the rest of a pull that is arriving join this group.
                tokio::time::sleep(GROUP_LINGER).await;
            }
            let tenants = self.shared.tenants.current();
            let n = permits.num_permits();
            let admitted = admission::admit(
                &self.shared,
                &self.meters,
                &self.queue,
                &tenants,
                job_type,
                n,
            )
            .await;
            let started = self.queue.take_capped(n, &admitted.caps);
            admission::unadmit_unstarted(&self.shared, &tenants, job_type, &admitted, &started)
                .await;
            if started.is_empty() {
                // Every job waiting is held back by its tenant's limits: look again when one
                // may start or another tenant's job arrives.
                let wait = admitted
                    .retry_after
                    .unwrap_or(LIMIT_POLL)
                    .clamp(Duration::from_millis(1), LIMIT_POLL);
                tokio::select! {
                    () = self.queue.until_arrival() => {}
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            // A group per tenant: another tenant's few jobs commit in a transaction of their
            // own, not inside a flood's 128.
            let mut by_tenant: Vec<(Option<String>, Vec<jetstream::Message>)> = Vec::new();
            for (tenant, message) in started {
                match by_tenant.iter_mut().find(|(t, _)| *t == tenant) {
                    Some((_, messages)) => messages.push(message),
                    None => by_tenant.push((tenant, vec![message])),
                }
            }
            let mut groups = Vec::new();
            for (_, messages) in by_tenant {
                let Some(taken) = permits.split(messages.len()) else {
                    continue;
                };
                groups.extend(self.groups(messages, taken, &hard_stop));
            }
            for group in groups {
                let served = self.served.clone();
                let shared = self.shared.clone();
                let held = admission::tenants_of(&shared, &group.messages);
                let gauges: Vec<_> = held
                    .iter()
                    .map(|(tenant, jobs)| self.meters.tenant_in_flight(tenant, *jobs))
                    .collect();
                tasks.spawn(async move {
                    served.process(group).await;
                    drop(gauges);
                    for (tenant, jobs) in held {
                        shared.limiter.finished(&tenant, job_type, jobs).await;
                    }
                });
            }
        }

        for message in self.queue.take_all() {
            self.hand_back(&message).await;
        }
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

    async fn touch_waiting(&self, age: Duration) {
        let mut old = Vec::new();
        self.queue
            .touch_older_than(age, |message| old.push(message.clone()));
        for message in old {
            if let Err(error) = message.ack_with(AckKind::Progress).await {
                tracing::debug!(%error, "progress of a waiting job not sent");
            }
        }
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
            // Groups of up to a group's size: a round may start several, whose transactions
            // then overlap.
            let size = self.shared.concurrency.clamp(1, MAX_GROUP);
            let mut messages = messages;
            let mut groups = Vec::new();
            while !messages.is_empty() {
                let rest = messages.split_off(size.min(messages.len()));
                let Some(permits) = taken.split(messages.len()) else {
                    break;
                };
                groups.push(group(messages, permits));
                messages = rest;
            }
            return groups;
        }
        messages
            .into_iter()
            .filter_map(|message| taken.split(1).map(|slot| group(vec![message], slot)))
            .collect()
    }
}
