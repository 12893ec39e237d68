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

use crate::check::{self, Evidence, FaultKind, FaultWindow, Injected, Report};
use crate::cluster::{Cluster, Profile};
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
    /// A three-node R3 cluster with its own faults instead of the single server.
    pub cluster: Option<ClusterPlan>,
}

/// The cluster faults of a run; each is healed, and the cluster back to a leader with every
/// replica current, before the next one.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub size: usize,
    pub leader_kills: usize,
    pub follower_kills: usize,
    /// Alternately the stream leader and a follower.
    pub pauses: usize,
    /// One server cut off from both peers: alternately the leader and a follower.
    pub isolations: usize,
    /// The leader cut off from its clients while it still sees its peers.
    pub client_cuts: usize,
    /// How long a killed server stays down, a paused one stopped, a cut link down.
    pub down: Duration,
    pub pause: Duration,
    pub cut: Duration,
    /// Put each server in a network namespace for the partitions (needs root and iproute2).
    pub netns: bool,
}

impl ClusterPlan {
    /// `make chaos CLUSTER=3`: every fault twice.
    pub fn full(size: usize) -> Self {
        Self {
            size,
            leader_kills: 2,
            follower_kills: 2,
            pauses: 2,
            isolations: 2,
            client_cuts: 2,
            down: Duration::from_secs(3),
            pause: Duration::from_secs(12),
            cut: Duration::from_secs(12),
            netns: true,
        }
    }

    /// `make test`: each fault once (the isolation of leader and follower both).
    pub fn small(size: usize) -> Self {
        Self {
            leader_kills: 1,
            follower_kills: 1,
            pauses: 1,
            isolations: 2,
            client_cuts: 1,
            down: Duration::from_secs(2),
            pause: Duration::from_secs(10),
            cut: Duration::from_secs(10),
            ..Self::full(size)
        }
    }

    /// The faults in the order they are injected: kinds interleaved.
    fn schedule(&self, network: bool) -> Vec<FaultKind> {
        let mut lanes: Vec<Vec<FaultKind>> = vec![
            vec![FaultKind::LeaderKill; self.leader_kills],
            (0..self.pauses)
                .map(|n| {
                    if n % 2 == 0 {
                        FaultKind::LeaderPause
                    } else {
                        FaultKind::FollowerPause
                    }
                })
                .collect(),
            vec![FaultKind::FollowerKill; self.follower_kills],
        ];
        if network {
            lanes.push(
                (0..self.isolations)
                    .map(|n| {
                        if n % 2 == 0 {
                            FaultKind::FollowerIsolated
                        } else {
                            FaultKind::LeaderIsolated
                        }
                    })
                    .collect(),
            );
            lanes.push(vec![FaultKind::LeaderClientCut; self.client_cuts]);
        }
        let mut out = Vec::new();
        for round in 0..lanes.iter().map(Vec::len).max().unwrap_or(0) {
            out.extend(lanes.iter().filter_map(|lane| lane.get(round).copied()));
        }
        out
    }

    /// A rough length of the schedule, to spread the load over it.
    fn estimate(&self, faults: &[FaultKind]) -> Duration {
        faults
            .iter()
            .map(|kind| {
                FAULT_GAP
                    + Duration::from_secs(6)
                    + match kind {
                        FaultKind::LeaderKill | FaultKind::FollowerKill => self.down,
                        FaultKind::LeaderPause | FaultKind::FollowerPause => self.pause,
                        _ => self.cut,
                    }
            })
            .sum()
    }
}

/// Quiet time between one fault's recovery and the next fault.
const FAULT_GAP: Duration = Duration::from_secs(2);

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
            cluster: None,
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

    /// The small run on a cluster of `size`: fewer jobs, every cluster fault once.
    pub fn small_cluster(bin_dir: PathBuf, size: usize) -> Self {
        Self {
            kills: 3,
            // R3 with an fsync per write on a loaded 2-core machine: progress signals need
            // more headroom than on one server, and slow jobs still outlast two ack waits.
            ack_wait_secs: 5,
            slow_ms: 11_000,
            timeout: Duration::from_secs(300),
            cluster: Some(ClusterPlan::small(size)),
            ..Self::small(bin_dir)
        }
    }
}

/// The NATS side of a run: one server, or a cluster.
pub enum NatsServers {
    Single(Nats),
    Cluster(Cluster),
}

impl NatsServers {
    fn urls(&self) -> String {
        match self {
            NatsServers::Single(nats) => nats.url(),
            NatsServers::Cluster(cluster) => cluster.urls(),
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
    let profile = Profile::shared();
    let mut nats = match &plan.cluster {
        None => NatsServers::Single(Nats::start(dir.path()).await?),
        Some(cluster) => {
            let servers = Cluster::start(dir.path(), cluster.size, cluster.netns).await?;
            if let Some(reason) = &servers.skipped_partitions {
                say(
                    started,
                    format!(
                        "SKIPPING the network partitions: {reason}; the servers share loopback"
                    ),
                );
            }
            NatsServers::Cluster(servers)
        }
    };
    say(
        started,
        format!(
            "private servers up: {} and {}",
            nats.urls(),
            postgres.url("codigo")
        ),
    );
    create_database(&postgres.url("postgres")).await?;
    let common = Common {
        nats_url: nats.urls(),
        database_url: postgres.url("codigo"),
        max_deliver: plan.max_deliver,
        ack_wait_secs: plan.ack_wait_secs,
        stream_replicas: match &plan.cluster {
            Some(cluster) => profile.stream_replicas.min(cluster.size),
            None => 1,
        },
        duplicate_window_secs: profile.duplicate_window_secs,
    };
    procs::setup(&bins, &common).await?;

    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&common.database_url)
        .await
        .map_err(|e| ChaosError::Setup(format!("connect to the private Postgres: {e}")))?;
    let servers: Vec<async_nats::ServerAddr> = common
        .nats_url
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| ChaosError::Setup(format!("NATS URL {}: {e}", common.nats_url)))?;
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        // Notices a server cut off from its clients within seconds, and moves on.
        .ping_interval(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(servers)
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
                    windows.push(FaultWindow {
                        kind: FaultKind::NatsRestart,
                        node: "nats".into(),
                        start,
                        healed: Instant::now(),
                        leader_before: None,
                        leader_after: None,
                        stall: None,
                    });
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
    let start = Instant::now();
    postgres.restart_immediate().await?;
    windows.push(FaultWindow {
        kind: FaultKind::PostgresRestart,
        node: "postgres".into(),
        start,
        healed: Instant::now(),
        leader_before: None,
        leader_after: None,
        stall: None,
    });
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

/// The stream leader's server name, from the work stream's info.
async fn stream_leader(js: &async_nats::jetstream::Context) -> Option<String> {
    let info = tokio::time::timeout(Duration::from_secs(5), async {
        let mut stream = js.get_stream("CODIGO_JOBS").await.ok()?;
        stream.info().await.ok().map(|i| i.cluster.clone())
    })
    .await
    .ok()
    .flatten()??;
    info.leader
}

/// Both streams have a leader and every replica current.
async fn cluster_healthy(js: &async_nats::jetstream::Context, size: usize) -> bool {
    for name in ["CODIGO_JOBS", "CODIGO_DLQ"] {
        let cluster = tokio::time::timeout(Duration::from_secs(5), async {
            let mut stream = js.get_stream(name).await.ok()?;
            stream.info().await.ok().map(|i| i.cluster.clone())
        })
        .await
        .ok()
        .flatten()
        .flatten();
        let Some(cluster) = cluster else {
            return false;
        };
        if cluster.leader.is_none()
            || cluster.replicas.len() + 1 < size
            || cluster.replicas.iter().any(|r| !r.current || r.offline)
        {
            return false;
        }
    }
    true
}

async fn wait_healthy(
    js: &async_nats::jetstream::Context,
    size: usize,
    started: Instant,
    deadline: Instant,
) {
    let until = (Instant::now() + Duration::from_secs(90)).min(deadline);
    while Instant::now() < until {
        if cluster_healthy(js, size).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    say(
        started,
        "the cluster did not report every replica current within 90 s; going on".into(),
    );
}

/// Runs the cluster fault schedule, each fault healed and recovered from before the next.
async fn inject_cluster_faults(
    plan: &ClusterPlan,
    schedule: &[FaultKind],
    cluster: &mut Cluster,
    js: &async_nats::jetstream::Context,
    started: Instant,
    deadline: Instant,
) -> Result<Vec<FaultWindow>, ChaosError> {
    let size = cluster.size();
    let mut windows = Vec::new();
    for kind in schedule {
        if Instant::now() > deadline {
            break;
        }
        wait_healthy(js, size, started, deadline).await;
        tokio::time::sleep(FAULT_GAP).await;
        let leader_before = stream_leader(js).await;
        let leader = leader_before
            .as_deref()
            .and_then(|name| cluster.index_of(name))
            .unwrap_or(0);
        let target = match kind {
            FaultKind::LeaderKill
            | FaultKind::LeaderPause
            | FaultKind::LeaderIsolated
            | FaultKind::LeaderClientCut => leader,
            _ => (leader + 1 + fastrand::usize(..size - 1)) % size,
        };
        let node = cluster.name(target).to_owned();
        say(
            started,
            format!(
                "{} ({node}; leader {})",
                kind.describe(),
                leader_before.as_deref().unwrap_or("unknown")
            ),
        );
        let start = Instant::now();
        match kind {
            FaultKind::LeaderKill | FaultKind::FollowerKill => {
                cluster.kill(target).await?;
                tokio::time::sleep(plan.down).await;
                cluster.restart(target).await?;
            }
            FaultKind::LeaderPause | FaultKind::FollowerPause => {
                cluster.pause(target)?;
                tokio::time::sleep(plan.pause).await;
                cluster.resume(target)?;
            }
            FaultKind::LeaderIsolated | FaultKind::FollowerIsolated => {
                let cut = cluster.isolate(target, true);
                if cut.is_ok() {
                    tokio::time::sleep(plan.cut).await;
                }
                cluster.isolate(target, false)?;
                cut?;
            }
            FaultKind::LeaderClientCut => {
                let cut = cluster.cut_clients(target, true);
                if cut.is_ok() {
                    tokio::time::sleep(plan.cut).await;
                }
                cluster.cut_clients(target, false)?;
                cut?;
            }
            FaultKind::NatsRestart | FaultKind::PostgresRestart => continue,
        }
        let healed = Instant::now();
        wait_healthy(js, size, started, deadline).await;
        let leader_after = stream_leader(js).await;
        say(
            started,
            format!(
                "healed; recovered {:.1} s later, leader {}",
                healed.elapsed().as_secs_f64(),
                leader_after.as_deref().unwrap_or("unknown")
            ),
        );
        windows.push(FaultWindow {
            kind: *kind,
            node,
            start,
            // The window runs until the cluster has recovered: an election after the heal
            // is part of the fault.
            healed: Instant::now(),
            leader_before,
            leader_after,
            stall: None,
        });
    }
    Ok(windows)
}
