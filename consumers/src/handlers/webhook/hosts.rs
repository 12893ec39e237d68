//! Requests in flight per target host, capped.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Caps the requests in flight per target host, so that a slow or black-holed host holds a
/// few connections and the deliveries to every other host go on.
pub(super) struct HostSlots {
    pub(super) per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostSlots {
    /// Beyond this many hosts, idle ones are forgotten.
    const REMEMBERED: usize = 1024;

    pub(super) fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn of(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if hosts.len() >= Self::REMEMBERED && !hosts.contains_key(host) {
            let per_host = self.per_host;
            hosts.retain(|_, slots| {
                Arc::strong_count(slots) > 1 || slots.available_permits() < per_host
            });
        }
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }

    /// Waits up to `patience` for a slot of `host`.
    pub(super) async fn acquire(
        &self,
        host: &str,
        patience: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let slots = self.of(host);
        tokio::time::timeout(patience, slots.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}
