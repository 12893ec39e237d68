//! Tenants' limits at the moment jobs start: how many of a limited tenant's fetched jobs may
//! start now (the rest wait in their lane, and their turns go to the other tenants), and the
//! places in flight given back as jobs end.
use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use codigo_common::tenants::Tenants;

use super::fair::FairQueue;
use super::Shared;
use crate::events::{Meters, TenantThrottled};

/// What a dispatch round may start: at most `caps[tenant]` of each limited tenant's jobs, and
/// when to look again if a limit held every waiting job back.
pub(crate) struct Admitted {
    pub caps: BTreeMap<Option<String>, usize>,
    pub retry_after: Option<Duration>,
}

/// Asks the limits of every limited tenant with jobs waiting for the starts the rotation would
/// give it among `n`.
pub(crate) async fn admit<M>(
    shared: &Shared,
    meters: &Meters,
    queue: &FairQueue<M>,
    tenants: &Tenants,
    job_type: &str,
    n: usize,
) -> Admitted {
    let mut admitted = Admitted {
        caps: BTreeMap::new(),
        retry_after: None,
    };
    let limited: Vec<&str> = tenants
        .names()
        .filter(|t| {
            let (own, of_type) = tenants.limits(t, job_type);
            !(own.is_none() && of_type.is_none())
        })
        .collect();
    if limited.is_empty() {
        return admitted;
    }
    // A limited tenant the rotation does not reach this round starts nothing unasked.
    for tenant in &limited {
        admitted.caps.insert(Some((*tenant).to_owned()), 0);
    }
    let waiting = queue.waiting_by_tenant();
    for (tenant, want) in queue.plan(n) {
        let Some(name) = tenant.as_deref().filter(|t| limited.contains(t)) else {
            continue;
        };
        let limits = tenants.limits(name, job_type);
        let grant = shared.limiter.admit(name, job_type, limits, want).await;
        if grant.jobs == 0 {
            let retry = admitted
                .retry_after
                .map_or(grant.retry_after, |r| r.min(grant.retry_after));
            admitted.retry_after = Some(retry);
        }
        admitted.caps.insert(tenant.clone(), grant.jobs);
    }
    for tenant in &limited {
        let key = Some((*tenant).to_owned());
        let held = waiting.get(&key).copied().unwrap_or(0);
        let capped = admitted.caps.get(&key).copied().unwrap_or(0);
        meters.emit(TenantThrottled {
            tenant,
            jobs: held.saturating_sub(capped),
        });
    }
    admitted
}

/// Gives back what a round admitted but did not start (the rotation met new arrivals first).
pub(crate) async fn unadmit_unstarted(
    shared: &Shared,
    tenants: &Tenants,
    job_type: &str,
    admitted: &Admitted,
    started: &[(Option<String>, jetstream::Message)],
) {
    for (tenant, cap) in &admitted.caps {
        let Some(name) = tenant.as_deref() else {
            continue;
        };
        let count = started.iter().filter(|(t, _)| t == tenant).count();
        if *cap > count {
            let limits = tenants.limits(name, job_type);
            shared
                .limiter
                .unadmit(name, job_type, limits, cap - count)
                .await;
        }
    }
}

/// The tenants of `messages` (by their lane's subject), with their counts.
pub(crate) fn tenants_of(
    shared: &Shared,
    messages: &[jetstream::Message],
) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for message in messages {
        if let Some((_, lane)) = shared.names.lane_of(&message.subject) {
            if let Some(tenant) = lane.tenant {
                *by.entry(tenant).or_insert(0) += 1;
            }
        }
    }
    by
}
