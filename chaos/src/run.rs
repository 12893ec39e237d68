//! One chaos run, start to finish: private servers, the real binaries, load with faults, a
//! drain, the check, and clean-up whatever happened.
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;
use uuid::Uuid;

use crate::check::{self, Evidence, Injected, Report};
use crate::load::{self, JobSpec, Ledger, Load, Poison, PoisonKind};
use crate::procs::{self, Binaries, Common, ConsumerSettings, Consumers, Producer};
use crate::servers::{Nats, Postgres, WorkDir};
use crate::ChaosError;

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where codigo-producer, codigo-consumer and codigo-ctl are.
    pub bin_dir: PathBuf,
    /// Regular `ledger.post` jobs submitted through the gateway.
    pub jobs: usize,
    /// Consumer processes.
    pub consumers: usize,
    /// `kill -9` of a random consumer during the faulty phase (the switch to the calm phase
    /// kills every consumer once more).
    pub kills: usize,
    /// Probability that a worker aborts between a commit and its ack.
    pub crash_after_commit: f64,
    /// Jobs that crash their worker every time, until MaxDeliver dead-letters them.
    pub crash_jobs: usize,
    /// Poison published straight to JetStream, as a share of `jobs` (0.01 = 1 %).
    pub poison_share: f64,
    /// Jobs that run longer than the ack wait, and how long.
    pub slow_jobs: usize,
    pub slow_ms: u64,
    /// Share of `jobs` submitted in the calm phase, with the slow jobs.
    pub calm_share: f64,
    pub accounts: usize,
    pub submitters: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub ack_wait_secs: u64,
    pub max_deliver: i64,
    /// Longest the whole run may take before the check runs on what there is.
    pub timeout: Duration,
    /// Keep the work directory (logs, server data) for a post-mortem.
    pub keep_dir: bool,
}

impl Plan {
    /// `make chaos`: at least 50,000 jobs and 20 kills.
    pub fn full(bin_dir: PathBuf) -> Self {
        Self {
            bin_dir,
            jobs: 50_000,
            consumers: 3,
            kills: 20,
            crash_after_commit: 0.002,
            crash_jobs: 2,
            poison_share: 0.01,
            slow_jobs: 20,
            slow_ms: 10_000,
            calm_share: 0.15,
            accounts: 50,
            submitters: 6,
            batch: 50,
            concurrency: 32,
            ack_wait_secs: 4,
            max_deliver: 8,
            timeout: Duration::from_secs(1200),
            keep_dir: false,
        }
    }

    /// The run inside `make test`: every fault once or a few times, a few thousand jobs.
    pub fn small(bin_dir: PathBuf) -> Self {
        Self {
            jobs: 3000,
            kills: 4,
            crash_after_commit: 0.003,
            crash_jobs: 1,
            slow_jobs: 4,
            slow_ms: 7000,
            calm_share: 0.2,
            accounts: 20,
            submitters: 4,
            ack_wait_secs: 3,
            max_deliver: 8,
            timeout: Duration::from_secs(150),
            ..Self::full(bin_dir)
        }
    }
}

const TOKEN: &str = "chaos-token-00000000000000000001";

/// Runs the plan and checks the outcome. Servers and processes are gone when it returns.
pub async fn run(plan: &Plan) -> Result<Report, ChaosError> {
    let bins = Binaries::in_dir(&plan.bin_dir)?;
    let dir = WorkDir::create(plan.keep_dir)?;
    let started = Instant::now();
    let deadline = started + plan.timeout;
    say(started, format!("work directory {}", dir.path().display()));

    let mut postgres = Postgres::start(dir.path()).await?;
    let mut nats = Nats::start(dir.path()).await?;
    say(
        started,
        format!(
            "private servers up: {} and {}",
            nats.url(),
            postgres.url("codigo")
        ),
    );
    create_database(&postgres.url("postgres")).await?;
    let common = Common {
        nats_url: nats.url(),
        database_url: postgres.url("codigo"),
        max_deliver: plan.max_deliver,
        ack_wait_secs: plan.ack_wait_secs,
    };
    procs::setup(&bins, &common).await?;

    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&common.database_url)
        .await
        .map_err(|e| ChaosError::Setup(format!("connect to the private Postgres: {e}")))?;
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connect(common.nats_url.as_str())
        .await
        .map_err(|e| ChaosError::Setup(format!("connect to the private NATS: {e}")))?;
    let js = async_nats::jetstream::new(client.clone());

    let producer = Producer::start(&bins, &common, dir.path(), TOKEN).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ChaosError::Setup(format!("HTTP client: {e}")))?;
    wait_ready(&http, &producer.url("/readyz"), &producer.log).await?;

    let faults = format!("crash_after_commit={},memo", plan.crash_after_commit);
    let consumers = Arc::new(tokio::sync::Mutex::new(Consumers::new(
        bins.clone(),
        common.clone(),
        dir.path(),
        ConsumerSettings {
            concurrency: plan.concurrency,
        },
        plan.consumers,
        faults,
    )));
    consumers.lock().await.spawn_all()?;
    say(
        started,
        format!("producer and {} consumers started", plan.consumers),
    );

    // Background: restart dead consumers, scrape their metrics, watch progress.
    let stopping = Arc::new(AtomicBool::new(false));
    let applied = Arc::new(AtomicU64::new(0));
    let supervisor = tokio::spawn(supervise(consumers.clone(), http.clone(), stopping.clone()));
    let watcher = tokio::spawn(watch_applied(
        pool.clone(),
        applied.clone(),
        stopping.clone(),
    ));

    let outcome = drive(
        plan,
        &js,
        &pool,
        &http,
        &producer,
        &consumers,
        &mut nats,
        &mut postgres,
        &applied,
        started,
        deadline,
    )
    .await;

    // Stop everything, whatever happened, and collect the last metrics.
    stopping.store(true, Ordering::Relaxed);
    let _ = supervisor.await;
    let _ = watcher.await;
    scrape(&consumers, &http).await;
    consumers.lock().await.stop_all().await;
    let producer_metrics = match http.get(producer.url("/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let producer_log = producer.log.clone();
    producer.stop().await;

    let drove = outcome?;
    say(started, "checking".to_owned());
    let ledger: Ledger = drove
        .ledger
        .lock()
        .map(|mut ledger| std::mem::take(&mut *ledger))
        .map_err(|_| ChaosError::Check("ledger poisoned".into()))?;
    let consumers = consumers.lock().await;
    let report = check::check(Evidence {
        pool: &pool,
        js: &js,
        dlq_stream: "CODIGO_DLQ",
        ledger: &ledger,
        poisons: &drove.poisons,
        slow: &drove.slow,
        incarnations: &consumers.incarnations,
        producer_metrics: &producer_metrics,
        injected: &drove.injected,
    })
    .await?;
    if !report.passed() {
        eprintln!(
            "chaos: logs in {} (producer: {})",
            dir.path().display(),
            producer_log.display()
        );
    }
    say(started, "done".to_owned());
    pool.close().await;
    Ok(report)
}

fn say(started: Instant, what: String) {
    eprintln!("chaos [{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

async fn create_database(admin_url: &str) -> Result<(), ChaosError> {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .map_err(|e| ChaosError::Setup(format!("connect to the private Postgres: {e}")))?;
    sqlx::query("CREATE DATABASE codigo")
        .execute(&mut admin)
        .await
        .map_err(|e| ChaosError::Setup(format!("create database: {e}")))?;
    Ok(())
}

async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    log: &std::path::Path,
) -> Result<(), ChaosError> {
    for _ in 0..300 {
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ChaosError::Setup(format!(
        "{url} never answered 200 within 30 s; see {}",
        log.display()
    )))
}

async fn supervise(
    consumers: Arc<tokio::sync::Mutex<Consumers>>,
    http: reqwest::Client,
    stopping: Arc<AtomicBool>,
) {
    let mut last_scrape = Instant::now();
    while !stopping.load(Ordering::Relaxed) {
        if let Err(error) = consumers.lock().await.respawn_dead(true) {
            eprintln!("chaos: cannot restart a consumer: {error}");
        }
        if last_scrape.elapsed() >= Duration::from_millis(500) {
            scrape(&consumers, &http).await;
            last_scrape = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = consumers.lock().await.respawn_dead(false);
}

async fn scrape(consumers: &tokio::sync::Mutex<Consumers>, http: &reqwest::Client) {
    let targets = consumers.lock().await.scrape_targets();
    for (index, url) in targets {
        let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_millis(500), http.get(&url).send()).await
        else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        let counters = procs::parse_counters(&text);
        if let Some(incarnation) = consumers.lock().await.incarnations.get_mut(index) {
            if incarnation.alive() {
                incarnation.counters = Some(counters);
            }
        }
    }
}

async fn watch_applied(pool: PgPool, applied: Arc<AtomicU64>, stopping: Arc<AtomicBool>) {
    while !stopping.load(Ordering::Relaxed) {
        if let Ok(count) = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ledger_entries")
            .fetch_one(&pool)
            .await
        {
            applied.store(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Drove {
    ledger: Arc<Mutex<Ledger>>,
    poisons: Vec<Poison>,
    slow: HashSet<Uuid>,
    injected: Injected,
}

/// The work stream and the durable consumer, as JetStream reports them.
#[derive(Debug, Clone, Copy)]
struct WorkState {
    messages: u64,
    pending: u64,
    ack_pending: usize,
}

async fn work_state(js: &async_nats::jetstream::Context) -> Option<WorkState> {
    let mut stream = js.get_stream("CODIGO_JOBS").await.ok()?;
    let messages = stream.info().await.ok()?.state.messages;
    let consumer = stream.consumer_info("codigo-ledger-post").await.ok()?;
    Some(WorkState {
        messages,
        pending: consumer.num_pending,
        ack_pending: consumer.num_ack_pending,
    })
}

fn jobs(plan: &Plan) -> Vec<JobSpec> {
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
async fn until<F: FnMut() -> bool>(deadline: Instant, mut check: F) -> bool {
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    plan: &Plan,
    js: &async_nats::jetstream::Context,
    pool: &PgPool,
    http: &reqwest::Client,
    producer: &Producer,
    consumers: &Arc<tokio::sync::Mutex<Consumers>>,
    nats: &mut Nats,
    postgres: &mut Postgres,
    applied: &Arc<AtomicU64>,
    started: Instant,
    deadline: Instant,
) -> Result<Drove, ChaosError> {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let progress = Arc::new(AtomicU64::new(0));
    let load = Arc::new(Load {
        http: http.clone(),
        base: producer.url(""),
        token: TOKEN.into(),
        ledger: ledger.clone(),
        progress: progress.clone(),
        applied: applied.clone(),
        max_backlog: (plan.jobs as u64 / 10).max(500),
    });
    let mut injected = Injected::default();
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
    say(
        started,
        format!(
            "storm: {storm_len} jobs, {} kills, NATS restart",
            plan.kills
        ),
    );
    let (submitters, batch) = (plan.submitters, plan.batch);
    let storm_load = {
        let load = load.clone();
        tokio::spawn(async move {
            load.submit(storm, submitters, batch, Duration::ZERO, deadline)
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
    events.push(((storm_len as f64 * 0.4) as u64, true));
    events.sort_unstable();
    for (due, is_nats) in events {
        if !until(deadline, || applied.load(Ordering::Relaxed) >= due).await {
            return Err(ChaosError::Check(format!(
                "the consumers stalled at {} applied jobs (waiting for {due})",
                applied.load(Ordering::Relaxed)
            )));
        }
        if is_nats {
            say(started, format!("kill -9 nats-server at {due} applied"));
            nats.kill().await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            nats.restart().await?;
            injected.nats_restarts += 1;
            say(started, "nats-server restarted on the same store".into());
        } else if consumers.lock().await.kill_random() {
            injected.consumer_kills += 1;
        }
    }
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
    while Instant::now() < deadline {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'dead_lettered'",
        )
        .bind(&crash_ids)
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        if done as usize >= crash_ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
                wait_ready(http, &url, std::path::Path::new("the consumer logs")).await?;
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
    postgres.restart_immediate().await?;
    injected.postgres_restarts += 1;
    let _ = calm_load.await;

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
