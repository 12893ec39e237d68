//! One chaos run, start to finish: private servers, the real binaries, load with faults, a
//! drain, the check, and clean-up whatever happened.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;

use crate::check::{self, Evidence, Report};
use crate::cluster::{Cluster, Profile};
use crate::load::Ledger;
use crate::procs::{self, Binaries, Common, ConsumerSettings, Consumers, Producer};
use crate::servers::{Nats, Postgres, WorkDir};
use crate::ChaosError;

mod cluster_faults;
mod drive;
mod plan;

use self::drive::drive;
pub use self::plan::{ClusterPlan, Plan};

/// The NATS side of a run: one server, or a cluster.
pub enum NatsServers {
    Single(Box<Nats>),
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
        None => NatsServers::Single(Box::new(Nats::start(dir.path()).await?)),
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
    let producer_log = producer.log().to_owned();
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
