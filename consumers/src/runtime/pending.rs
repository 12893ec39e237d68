//! The job types a process serves, and the backlog of each, as
//! `codigo_consumer_pending_messages`, with its delayed jobs as `codigo_consumer_scheduled_jobs`.
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use codigo_common::shutdown::Shutdown;

use super::Shared;
use codigo_common::jetstream;

use crate::events::{Meters, PendingMessages, ScheduledJobs};
use crate::pause::pause;

/// The job types this process serves, with their meters: the built-in ones from the start,
/// declared ones while they are served. The backlog report and the orphan sweep follow it.
#[derive(Clone, Default)]
pub struct ServedTypes(Arc<RwLock<BTreeMap<&'static str, Arc<Meters>>>>);

impl ServedTypes {
    pub fn insert(&self, job_type: &'static str, meters: Arc<Meters>) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job_type, meters);
    }

    pub fn remove(&self, job_type: &str) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(job_type);
    }

    /// The served types now, in name order.
    pub fn snapshot(&self) -> Vec<(&'static str, Arc<Meters>)> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, meters)| (*name, meters.clone()))
            .collect()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.snapshot().into_iter().map(|(name, _)| name).collect()
    }
}

/// Reports each served consumer's `num_pending` every few seconds until `shutdown`.
pub async fn report_pending(shared: Arc<Shared>, served: ServedTypes, shutdown: Shutdown) {
    while !shutdown.is_cancelled() {
        if let Ok(stream) = shared.js.get_stream(shared.names.jobs_stream()).await {
            for (job_type, meters) in &served.snapshot() {
                if let Ok(info) = stream.consumer_info(shared.names.durable(job_type)).await {
                    meters.emit(PendingMessages(info.num_pending));
                }
                let names = &shared.names;
                if let Some(count) = jetstream::scheduled_count(&shared.js, names, job_type).await {
                    meters.emit(ScheduledJobs(count));
                }
            }
        }
        pause(&shutdown, Duration::from_secs(5)).await;
    }
}
