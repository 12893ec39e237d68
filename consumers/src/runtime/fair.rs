//! Fair dispatch: the jobs fetched from a type's lanes wait here, and free slots take them in
//! a weighted rotation over the tenants that have some (each tenant's weight from
//! `CODIGO_TENANTS`), and within a tenant over its priorities (4 high : 2 normal : 1 low).
//!
//! The rotation is smooth weighted round robin (as nginx balances upstreams): every pick adds
//! each candidate's weight to its credit, takes the one with the most, and charges it the sum
//! of the candidates' weights. Over any stretch where the same tenants have a backlog each
//! gets its weight's share of the starts, spread out rather than in bursts, and one that has
//! nothing waiting is skipped without losing or banking a turn: work-conserving.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use codigo_common::lanes::{Lane, Priority};
use tokio::sync::Notify;

/// Smooth weighted round robin credits over a set of keys.
#[derive(Debug, Default, Clone)]
pub(crate) struct Rotation<K: Ord> {
    credit: BTreeMap<K, i64>,
}

impl<K: Ord + Clone> Rotation<K> {
    /// The next key among `candidates` (key, weight), or `None` when there is none.
    pub(crate) fn pick(&mut self, candidates: &[(K, u32)]) -> Option<K> {
        let total: i64 = candidates.iter().map(|(_, w)| i64::from(*w)).sum();
        let mut best: Option<(&K, i64)> = None;
        for (key, weight) in candidates {
            let credit = self.credit.entry(key.clone()).or_insert(0);
            *credit += i64::from(*weight);
            if best.is_none_or(|(_, c)| *credit > c) {
                best = Some((key, *credit));
            }
        }
        let (key, _) = best?;
        let key = key.clone();
        if let Some(credit) = self.credit.get_mut(&key) {
            *credit -= total;
        }
        // A key with nothing waiting keeps no credit: an idle tenant banks no burst.
        self.credit
            .retain(|k, _| candidates.iter().any(|(candidate, _)| candidate == k));
        Some(key)
    }
}

type TenantKey = Option<String>;

struct Waiting<M> {
    message: M,
    fetched: Instant,
}

struct State<M> {
    lanes: BTreeMap<Lane, VecDeque<Waiting<M>>>,
    weights: BTreeMap<TenantKey, u32>,
    tenants: Rotation<TenantKey>,
    priorities: BTreeMap<TenantKey, Rotation<Priority>>,
    waiting: usize,
    /// Set at shutdown: what arrives after is handed straight back.
    closed: bool,
}

/// The jobs of one type fetched and not yet started, by lane.
pub(crate) struct FairQueue<M> {
    state: Mutex<State<M>>,
    /// Signalled when jobs arrive.
    arrived: Notify,
    /// Signalled when jobs leave, for the lanes' fetchers to top up.
    taken: Notify,
}

impl<M> FairQueue<M> {
    /// A queue over `lanes`, each with its tenant's weight.
    pub(crate) fn new(lanes: impl IntoIterator<Item = (Lane, u32)>) -> Self {
        let mut state = State {
            lanes: BTreeMap::new(),
            weights: BTreeMap::new(),
            tenants: Rotation::default(),
            priorities: BTreeMap::new(),
            waiting: 0,
            closed: false,
        };
        for (lane, weight) in lanes {
            state.weights.insert(lane.tenant.clone(), weight.max(1));
            state.lanes.insert(lane, VecDeque::new());
        }
        Self {
            state: Mutex::new(state),
            arrived: Notify::new(),
            taken: Notify::new(),
        }
    }

    /// Adds a lane found on the server, of a tenant no longer (or not yet) listed here.
    pub(crate) fn add_lane(&self, lane: Lane, weight: u32) {
        let mut state = self.lock();
        state
            .weights
            .entry(lane.tenant.clone())
            .or_insert(weight.max(1));
        state.lanes.entry(lane).or_default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<M>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a fetched job; gives it back once the queue is closed (or for a lane it does not
    /// hold), for the caller to hand back to the server.
    pub(crate) fn push(&self, lane: &Lane, message: M) -> Result<(), M> {
        let mut state = self.lock();
        if state.closed {
            return Err(message);
        }
        let Some(queue) = state.lanes.get_mut(lane) else {
            return Err(message);
        };
        queue.push_back(Waiting {
            message,
            fetched: Instant::now(),
        });
        state.waiting += 1;
        drop(state);
        self.arrived.notify_one();
        Ok(())
    }

    /// Jobs of `lane` fetched and not started.
    pub(crate) fn waiting_in(&self, lane: &Lane) -> usize {
        self.lock().lanes.get(lane).map_or(0, VecDeque::len)
    }

    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Waits until some job is waiting.
    pub(crate) async fn until_any(&self) {
        loop {
            let arrived = self.arrived.notified();
            if self.waiting() > 0 {
                return;
            }
            arrived.await;
        }
    }

    /// Waits until a job arrives.
    pub(crate) async fn until_arrival(&self) {
        self.arrived.notified().await;
    }

    /// Waits until at most `room` of `lane`'s jobs wait. The wake-up is registered before the
    /// count is read: a take between the two would otherwise go unnoticed, and the lane would
    /// sit idle with an empty buffer.
    pub(crate) async fn until_at_most(&self, lane: &Lane, room: usize) {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if self.waiting_in(lane) <= room {
                return;
            }
            taken.await;
        }
    }

    /// Up to `n` jobs in the rotation's order.
    #[cfg(test)]
    pub(crate) fn take(&self, n: usize) -> Vec<M> {
        self.take_capped(n, &BTreeMap::new())
            .into_iter()
            .map(|(_, message)| message)
            .collect()
    }

    /// How many of `n` starts the rotation would give each tenant with jobs waiting now,
    /// without taking any: what limited tenants ask their limits for.
    pub(crate) fn plan(&self, n: usize) -> BTreeMap<TenantKey, usize> {
        let state = self.lock();
        let mut tenants = state.tenants.clone();
        let mut priorities = state.priorities.clone();
        let mut left: BTreeMap<&Lane, usize> = state
            .lanes
            .iter()
            .map(|(lane, q)| (lane, q.len()))
            .collect();
        let mut plan = BTreeMap::new();
        for _ in 0..n {
            let pick = pick_lane(&state.weights, &mut tenants, &mut priorities, |lane| {
                left.get(lane).is_some_and(|n| *n > 0)
            });
            let Some(lane) = pick else { break };
            if let Some(n) = left.get_mut(&lane) {
                *n -= 1;
            }
            *plan.entry(lane.tenant).or_insert(0) += 1;
        }
        plan
    }

    /// Up to `n` jobs in the rotation's order, at most `caps[tenant]` of a capped tenant's:
    /// one held back by a limit gives its turn to the others.
    pub(crate) fn take_capped(
        &self,
        n: usize,
        caps: &BTreeMap<TenantKey, usize>,
    ) -> Vec<(TenantKey, M)> {
        let mut state = self.lock();
        let mut room = caps.clone();
        let mut taken = Vec::with_capacity(n.min(state.waiting));
        while taken.len() < n && state.waiting > 0 {
            let State {
                lanes,
                weights,
                tenants,
                priorities,
                ..
            } = &mut *state;
            let pick = pick_lane(weights, tenants, priorities, |lane| {
                !lanes.get(lane).is_none_or(VecDeque::is_empty)
                    && room.get(&lane.tenant).is_none_or(|left| *left > 0)
            });
            let Some(lane) = pick else { break };
            if let Some(waiting) = state.lanes.get_mut(&lane).and_then(VecDeque::pop_front) {
                state.waiting -= 1;
                if let Some(left) = room.get_mut(&lane.tenant) {
                    *left -= 1;
                }
                taken.push((lane.tenant, waiting.message));
            }
        }
        drop(state);
        if !taken.is_empty() {
            self.taken.notify_waiters();
        }
        taken
    }

    /// Jobs waiting per tenant.
    pub(crate) fn waiting_by_tenant(&self) -> BTreeMap<TenantKey, usize> {
        let state = self.lock();
        let mut by = BTreeMap::new();
        for (lane, queue) in &state.lanes {
            *by.entry(lane.tenant.clone()).or_insert(0) += queue.len();
        }
        by
    }

    /// New tenant weights, from a changed configuration.
    pub(crate) fn set_weights(&self, weight: impl Fn(Option<&str>) -> u32) {
        let mut state = self.lock();
        let keys: Vec<TenantKey> = state.weights.keys().cloned().collect();
        for key in keys {
            let w = weight(key.as_deref()).max(1);
            state.weights.insert(key, w);
        }
    }

    /// Closes the queue and takes every waiting job: what is handed back at shutdown.
    pub(crate) fn take_all(&self) -> Vec<M> {
        let mut state = self.lock();
        state.closed = true;
        state.waiting = 0;
        let taken = state
            .lanes
            .values_mut()
            .flat_map(|queue| queue.drain(..).map(|w| w.message))
            .collect();
        drop(state);
        self.taken.notify_waiters();
        taken
    }

    /// Calls `f` on each job waiting for longer than `age`, restarting its clock: the jobs a
    /// busy worker holds must tell the server they are alive, or it redelivers them.
    pub(crate) fn touch_older_than(&self, age: Duration, mut f: impl FnMut(&M)) {
        let now = Instant::now();
        let mut state = self.lock();
        for waiting in state.lanes.values_mut().flat_map(|q| q.iter_mut()) {
            if now.duration_since(waiting.fetched) >= age {
                f(&waiting.message);
                waiting.fetched = now;
            }
        }
    }
}

/// The lane whose job starts next among those `open` admits: a tenant by weight, then one of
/// its priorities by weight.
fn pick_lane(
    weights: &BTreeMap<TenantKey, u32>,
    tenants: &mut Rotation<TenantKey>,
    priorities: &mut BTreeMap<TenantKey, Rotation<Priority>>,
    open: impl Fn(&Lane) -> bool,
) -> Option<Lane> {
    let lane_of = |tenant: &TenantKey, priority: Priority| Lane {
        tenant: tenant.clone(),
        priority,
    };
    let candidates: Vec<(TenantKey, u32)> = weights
        .iter()
        .filter(|(tenant, _)| Priority::ALL.iter().any(|p| open(&lane_of(tenant, *p))))
        .map(|(tenant, weight)| (tenant.clone(), *weight))
        .collect();
    let tenant = tenants.pick(&candidates)?;
    let open_priorities: Vec<(Priority, u32)> = Priority::ALL
        .iter()
        .filter(|p| open(&lane_of(&tenant, **p)))
        .map(|p| (*p, p.weight()))
        .collect();
    let priority = priorities
        .entry(tenant.clone())
        .or_default()
        .pick(&open_priorities)?;
    Some(Lane { tenant, priority })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(tenant: &str, priority: Priority) -> Lane {
        Lane::new(Some(tenant), priority)
    }

    fn queue(tenants: &[(&str, u32)]) -> FairQueue<(String, Priority, usize)> {
        FairQueue::new(
            tenants
                .iter()
                .flat_map(|(t, w)| Priority::ALL.iter().map(move |p| (lane(t, *p), *w))),
        )
    }

    fn fill(q: &FairQueue<(String, Priority, usize)>, tenant: &str, p: Priority, n: usize) {
        for i in 0..n {
            assert!(q.push(&lane(tenant, p), (tenant.to_owned(), p, i)).is_ok());
        }
    }

    #[test]
    fn a_small_tenant_is_served_at_once_behind_a_flood() {
        let q = queue(&[("a", 1), ("b", 1)]);
        fill(&q, "a", Priority::Normal, 10_000);
        fill(&q, "b", Priority::Normal, 3);
        let first = q.take(8);
        let b: Vec<_> = first.iter().filter(|(t, _, _)| t == "b").collect();
        assert_eq!(b.len(), 3, "{first:?}");
        // Within a lane, arrival order holds.
        assert!(b.windows(2).all(|w| w[0].2 < w[1].2));
        // Once b has nothing waiting, a takes every slot: nothing is held back.
        assert!(q.take(100).iter().all(|(t, _, _)| t == "a"));
    }

    #[test]
    fn backlogged_tenants_share_by_weight() {
        let q = queue(&[("a", 1), ("b", 1), ("c", 3)]);
        for t in ["a", "b", "c"] {
            fill(&q, t, Priority::Normal, 1_000);
        }
        let taken = q.take(500);
        let count = |name: &str| taken.iter().filter(|(t, _, _)| t == name).count();
        assert_eq!((count("a"), count("b"), count("c")), (100, 100, 300));
        // Spread out: in any 5 consecutive starts each tenant has its share.
        for window in taken.chunks(5) {
            let c = window.iter().filter(|(t, _, _)| t == "c").count();
            assert_eq!(c, 3, "{window:?}");
        }
    }

    #[test]
    fn priorities_go_four_two_one_and_low_is_never_starved() {
        let q = queue(&[("a", 1)]);
        for p in Priority::ALL {
            fill(&q, "a", p, 1_000);
        }
        let taken = q.take(700);
        let count = |p: Priority| taken.iter().filter(|(_, q, _)| *q == p).count();
        assert_eq!(
            (
                count(Priority::High),
                count(Priority::Normal),
                count(Priority::Low)
            ),
            (400, 200, 100)
        );
        assert!(taken[..7].iter().any(|(_, p, _)| *p == Priority::Low));
    }

    #[test]
    fn priorities_are_weighed_within_a_tenant_share_not_across_tenants() {
        let q = queue(&[("a", 1), ("b", 1)]);
        fill(&q, "a", Priority::High, 1_000);
        fill(&q, "b", Priority::Low, 1_000);
        let taken = q.take(100);
        let b = taken.iter().filter(|(t, _, _)| t == "b").count();
        assert_eq!(
            b, 50,
            "a tenant's high priority takes nothing from another tenant"
        );
    }

    #[test]
    fn an_idle_tenant_banks_no_credit() {
        let q = queue(&[("a", 1), ("b", 1)]);
        fill(&q, "a", Priority::Normal, 1_000);
        let _ = q.take(300);
        fill(&q, "b", Priority::Normal, 1_000);
        let taken = q.take(10);
        let b = taken.iter().filter(|(t, _, _)| t == "b").count();
        assert_eq!(b, 5, "{taken:?}");
    }

    #[test]
    fn a_lane_added_later_takes_its_turn() {
        let q = queue(&[("a", 1)]);
        fill(&q, "a", Priority::Normal, 100);
        let late = lane("b", Priority::Normal);
        assert!(
            q.push(&late, ("b".into(), Priority::Normal, 0)).is_err(),
            "unknown lane"
        );
        q.add_lane(late.clone(), 1);
        assert!(q.push(&late, ("b".into(), Priority::Normal, 0)).is_ok());
        assert!(q.take(2).iter().any(|(t, _, _)| t == "b"));
    }

    #[test]
    fn everything_waiting_is_handed_back() {
        let q = queue(&[("a", 1)]);
        fill(&q, "a", Priority::High, 3);
        fill(&q, "a", Priority::Low, 2);
        assert_eq!(q.waiting(), 5);
        assert_eq!(q.waiting_in(&lane("a", Priority::Low)), 2);
        assert_eq!(q.take_all().len(), 5);
        assert_eq!(q.waiting(), 0);
        assert!(q.take(10).is_empty());
        let late = (String::from("a"), Priority::High, 9);
        assert!(q.push(&lane("a", Priority::High), late).is_err(), "closed");
    }

    #[test]
    fn old_waiting_jobs_are_touched_once_per_age() {
        let q = queue(&[("a", 1)]);
        fill(&q, "a", Priority::Normal, 2);
        let mut touched = 0;
        q.touch_older_than(Duration::ZERO, |_| touched += 1);
        assert_eq!(touched, 2);
        q.touch_older_than(Duration::from_secs(60), |_| touched += 1);
        assert_eq!(touched, 2);
    }
}
