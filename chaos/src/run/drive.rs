//! The two phases of a run (the storm with its faults, the calm with slow jobs and a
//! Postgres restart) and the drain that follows them.
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codigo_testkit::process::{self, Probe};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::check::{self, FaultKind, FaultWindow, Injected};
use crate::load::{self, JobSpec, Ledger, Load, Poison, PoisonKind};
use crate::procs::{Consumers, Producer, READY};
use crate::servers::Postgres;
use crate::ChaosError;

use super::cluster_faults::inject_cluster_faults;
use super::plan::Plan;
use super::{say, NatsServers, TOKEN};

pub(super) struct Drove {
    pub(super) ledger: Arc<Mutex<Ledger>>,
    pub(super) poisons: Vec<Poison>,
    pub(super) slow: HashSet<Uuid>,
    pub(super) injected: Injected,
}

/// The work stream and the durable consumer, as JetStream reports them.
#[derive(Debug, Clone, Copy)]
pub(super) struct WorkState {
    pub(super) messages: u64,
    pub(super) pending: u64,
    pub(super) ack_pending: usize,
}

pub(super) async fn work_state(js: &async_nats::jetstream::Context) -> Option<WorkState> {
    let mut stream = js.get_stream("CODIGO_JOBS").await.ok()?;
    let messages = stream.info().await.ok()?.state.messages;
    let consumer = stream.consumer_info("codigo-ledger-post").await.ok()?;
    Some(WorkState {
        messages,
        pending: consumer.num_pending,
        ack_pending: consumer.num_ack_pending,
    })
}

pub(super) fn jobs(plan: &Plan) -> Vec<JobSpec> {
    let run = Uuid::new_v4().simple().to_string();
    (0..plan.jobs)
        .map(|n| {
            let magnitude = i64::try_from(fastrand::u64(1..=100_000)).unwrap_or(1);
            JobSpec {
                key: format!("chaos-{}-{n}", &run[..8]),
                account: format!("acct-{}", n % plan.accounts.max(1)),
                amount: if fastrand::bool() {
                    magnitude
                } else {
                    -magnitude
                },
                memo: None,
            }
        })
        .collect()
}

/// Waits until `check` holds or the deadline passes.
pub(super) async fn until<F: FnMut() -> bool>(deadline: Instant, mut check: F) -> bool {
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn drive(
    plan: &Plan,
    js: &async_nats::jetstream::Context,
    pool: &PgPool,
    http: &reqwest::Client,
    producer: &Producer,
    consumers: &Arc<tokio::sync::Mutex<Consumers>>,
    nats: &mut NatsServers,
    postgres: &mut Postgres,
    applied: &Arc<AtomicU64>,
    started: Instant,
    deadline: Instant,
) -> Result<Drove, ChaosError> {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let progress = Arc::new(AtomicU64::new(0));
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let load = Arc::new(Load {
        timeline: timeline.clone(),
        http: http.clone(),
        base: producer.url(""),
        token: TOKEN.into(),
        ledger: ledger.clone(),
        progress: progress.clone(),
        applied: applied.clone(),
        max_backlog: (plan.jobs as u64 / 10).max(500),
    });
    let mut injected = Injected::default();
    let schedule = match (&plan.cluster, &*nats) {
        (Some(cluster_plan), NatsServers::Cluster(cluster)) => {
            injected.cluster_size = cluster.size();
            injected.partitions_skipped = cluster.skipped_partitions.clone();
            cluster_plan.schedule(cluster.has_network())
        }
        _ => Vec::new(),
    };
    let subject = "codigo.jobs.ledger.post";

    let mut all = jobs(plan);
    let calm_jobs = ((plan.jobs as f64) * plan.calm_share) as usize;
    let calm = all.split_off(all.len() - calm_jobs.min(all.len()));
    let storm = all;
    let storm_len = storm.len() as u64;

    // Jobs that crash their worker on every delivery go first: they need MaxDeliver ack waits.
    let mut poisons = Vec::new();
    for n in 0..plan.crash_jobs {
        let poison = load::poison(PoisonKind::Crash, n);
        if !load::publish_poison(js, subject, &poison, &format!("poison-crash-{n}"), deadline).await
        {
            return Err(ChaosError::Setup(
                "could not publish the chaos:crash jobs".into(),
            ));
        }
        poisons.push(poison);
    }
    *injected.poison.entry("max_deliveries").or_default() += plan.crash_jobs as u64;

    // Phase 1, the storm: load, poison, random kills, a NATS kill -9 and restart.
    // On a cluster smaller requests keep one in flight through every fault window.
    let (submitters, batch) = match plan.cluster {
        Some(_) => (plan.submitters, plan.batch.min(10)),
        None => (plan.submitters, plan.batch),
    };
    // On a cluster the storm is spread over the fault schedule, so that every fault meets load.
    let storm_pace = match &plan.cluster {
        Some(cluster_plan) => {
            let chunks = storm.len().div_ceil(batch.max(1)).max(1) as u32;
            cluster_plan.estimate(&schedule) * submitters as u32 / chunks
        }
        None => Duration::ZERO,
    };
    say(
        started,
        if schedule.is_empty() {
            format!(
                "storm: {storm_len} jobs, {} kills, NATS restart",
                plan.kills
            )
        } else {
            format!(
                "storm: {storm_len} jobs, {} kills, cluster faults: {}",
                plan.kills,
                schedule
                    .iter()
                    .map(|k| k.describe())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    );
    let storm_load = {
        let load = load.clone();
        tokio::spawn(async move {
            load.submit(storm, submitters, batch, storm_pace, deadline)
                .await
        })
    };
    let poison_count = ((plan.jobs as f64) * plan.poison_share).round() as usize;
    let poison_task = {
        let js = js.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut published = Vec::new();
            let kinds = [
                PoisonKind::Decode,
                PoisonKind::Schema,
                PoisonKind::Permanent,
            ];
            for n in 0..poison_count {
                let due = (n as u64 + 1) * storm_len / (poison_count as u64 + 1);
                if !until(deadline, || progress.load(Ordering::Relaxed) >= due).await {
                    break;
                }
                let poison = load::poison(kinds[n % kinds.len()], n);
                if load::publish_poison(&js, subject, &poison, &format!("poison-{n}"), deadline)
                    .await
                {
                    published.push(poison);
                }
            }
            published
        })
    };

    let mut events: Vec<(u64, bool)> = (0..plan.kills)
        .map(|k| {
            let share = 0.05 + 0.85 * (k as f64 + fastrand::f64()) / plan.kills.max(1) as f64;
            ((storm_len as f64 * share) as u64, false)
        })
        .collect();
    let (mut single, cluster) = match nats {
        NatsServers::Single(nats) => (Some(nats), None),
        NatsServers::Cluster(cluster) => (None, Some(cluster)),
    };
    if single.is_some() {
        events.push(((storm_len as f64 * 0.4) as u64, true));
    }
    events.sort_unstable();
    let mut windows = Vec::new();
    let kills = async {
        let mut killed = 0;
        for (due, is_nats) in events {
            if !until(deadline, || applied.load(Ordering::Relaxed) >= due).await {
                return Err(ChaosError::Check(format!(
                    "the consumers stalled at {} applied jobs (waiting for {due})",
                    applied.load(Ordering::Relaxed)
                )));
            }
            if is_nats {
                if let Some(nats) = single.as_mut() {
                    say(started, format!("kill -9 nats-server at {due} applied"));
                    let start = Instant::now();
                    nats.kill().await?;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    nats.restart().await?;
                    windows.push(FaultWindow::until_now(
                        FaultKind::NatsRestart,
                        "nats",
                        start,
                    ));
                    say(started, "nats-server restarted on the same store".into());
                }
            } else if consumers.lock().await.kill_random() {
                killed += 1;
            }
        }
        Ok::<u64, ChaosError>(killed)
    };
    let cluster_faults = async {
        match (&plan.cluster, cluster) {
            (Some(cluster_plan), Some(cluster)) => {
                // The first fault once the workers are under way.
                let first = (storm_len / 20).max(1);
                until(deadline, || applied.load(Ordering::Relaxed) >= first).await;
                inject_cluster_faults(cluster_plan, &schedule, cluster, js, started, deadline).await
            }
            _ => Ok(Vec::new()),
        }
    };
    let (killed, cluster_windows) = tokio::join!(kills, cluster_faults);
    injected.consumer_kills += killed?;
    let cluster_windows = cluster_windows?;
    injected.nats_restarts += windows.len() as u64;
    windows.extend(cluster_windows);
    let _ = storm_load.await;
    let mut published = poison_task.await.unwrap_or_default();
    for poison in &published {
        *injected.poison.entry(poison.kind.reason()).or_default() += 1;
    }
    poisons.append(&mut published);
    say(
        started,
        format!("storm submitted; {} kills so far", injected.consumer_kills),
    );

    // The crash jobs must be dead-lettered before the calm phase: each delivery kills a worker.
    let crash_ids: Vec<Uuid> = poisons
        .iter()
        .filter(|p| p.kind == PoisonKind::Crash)
        .filter_map(|p| p.id)
        .collect();
    wait_dead_lettered(pool, &crash_ids, deadline).await?;
    say(started, "chaos:crash jobs dead-lettered".into());

    // Phase 2, calm: workers without crashes; slow jobs must then never be redelivered, also
    // across a Postgres crash-restart.
    {
        let mut consumers = consumers.lock().await;
        consumers.faults = "memo".into();
        injected.consumer_kills += consumers.kill_all() as u64;
    }
    // Wait for the replacements (the supervisor starts them) to be ready.
    until(deadline, || true).await;
    loop {
        let (live, urls) = {
            let consumers = consumers.lock().await;
            (consumers.live(), consumers.ready_urls())
        };
        if live == plan.consumers && urls.len() == plan.consumers {
            for url in urls {
                process::wait_ready(&Probe::Http(url), READY).await?;
            }
            break;
        }
        if Instant::now() > deadline {
            return Err(ChaosError::Check("the consumers did not come back".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow: Vec<JobSpec> = (0..plan.slow_jobs)
        .map(|n| JobSpec {
            key: format!("chaos-slow-{}-{n}", Uuid::new_v4().simple()),
            account: format!("slow-{}", n % 3),
            amount: 7,
            memo: Some(format!("chaos:sleep={}", plan.slow_ms)),
        })
        .collect();
    let slow_ids: HashSet<Uuid> = slow.iter().map(JobSpec::id).collect();
    injected.slow_jobs = slow.len() as u64;
    say(
        started,
        format!(
            "calm: {} jobs, {} slow jobs, Postgres restart",
            calm.len(),
            slow.len()
        ),
    );
    // The calm load is spread over the slow jobs' sleep, so that the Postgres restart hits
    // workers in the middle of their transactions.
    let calm_batch = 5;
    let chunks = calm.len().div_ceil(calm_batch).max(1) as u32;
    let pace = Duration::from_millis(plan.slow_ms) * submitters as u32 / chunks;
    let calm_len = calm.len() as u64;
    let slow_load = {
        let load = load.clone();
        tokio::spawn(async move { load.submit(slow, 1, 1, Duration::ZERO, deadline).await })
    };
    let calm_load = {
        let load = load.clone();
        tokio::spawn(async move {
            load.submit(calm, submitters, calm_batch, pace, deadline)
                .await
        })
    };
    let _ = slow_load.await;
    let due = storm_len + calm_len / 3;
    until(deadline, || applied.load(Ordering::Relaxed) >= due).await;
    say(started, "pg_ctl restart -m immediate".into());
    let start = Instant::now();
    postgres.restart_immediate().await?;
    windows.push(FaultWindow::until_now(
        FaultKind::PostgresRestart,
        "postgres",
        start,
    ));
    injected.postgres_restarts += 1;
    let _ = calm_load.await;
    let timeline = timeline
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default();
    injected.quiet_stall = check::measure_stalls(&mut windows, &timeline);
    injected.windows = windows;

    // Drain: every accepted job applied, the work stream empty, every poison dead-lettered.
    let accepted = ledger.lock().map(|l| l.accepted.len()).unwrap_or(0) as u64;
    let expected_dead = poisons.len() as u64;
    say(started, format!("draining {accepted} accepted jobs"));
    let mut drained = false;
    let mut last_note = Instant::now();
    while Instant::now() < deadline {
        let work = work_state(js).await;
        let dead = match js.get_stream("CODIGO_DLQ").await {
            Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        let done = applied.load(Ordering::Relaxed);
        if work.is_some_and(|w| w.pending == 0 && w.ack_pending == 0)
            && done >= accepted
            && dead >= expected_dead
        {
            drained = true;
            if let Some(work) = work {
                injected.orphans = work.messages;
            }
            break;
        }
        if last_note.elapsed() > Duration::from_secs(15) {
            say(started, format!("still draining: applied {done}/{accepted}, dead letters {dead}/{expected_dead}, work stream {work:?}"));
            last_note = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !drained {
        say(
            started,
            "deadline reached before the pipeline drained; checking what there is".into(),
        );
    }
    Ok(Drove {
        ledger,
        poisons,
        slow: slow_ids,
        injected,
    })
}

/// Waits until every job of `ids` is `dead_lettered` in `jobs`; at the deadline, fails naming
/// the ones that are not.
async fn wait_dead_lettered(
    pool: &PgPool,
    ids: &[Uuid],
    deadline: Instant,
) -> Result<(), ChaosError> {
    let mut missing: Vec<Uuid> = ids.to_vec();
    loop {
        let done: Result<Vec<Uuid>, _> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE id = ANY($1) AND status = 'dead_lettered'",
        )
        .bind(&missing)
        .fetch_all(pool)
        .await;
        if let Ok(done) = done {
            let done: HashSet<Uuid> = done.into_iter().collect();
            missing.retain(|id| !done.contains(id));
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let named: Vec<String> = missing.iter().map(Uuid::to_string).collect();
            return Err(ChaosError::Check(format!(
                "{} of {} chaos:crash jobs were not dead-lettered by the deadline (their jobs row \
                 is not dead_lettered): {}; look for their max-deliveries advisories and the \
                 orphan sweep in the consumer logs (--keep-dir keeps them)",
                missing.len(),
                ids.len(),
                named.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
