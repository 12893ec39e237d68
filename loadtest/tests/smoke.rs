//! A few seconds of the load generator against the real producer and consumer (in-process)
//! on real NATS and Postgres: every run completes and its counts add up. Speed is never
//! asserted here; `make bench` measures it.
use std::net::SocketAddr;
use std::time::Duration;

use codigo_loadtest::baseline::{self, BaselineSpec};
use codigo_loadtest::driver::Load;
use codigo_loadtest::run::{self, Endpoints, Report, RunSpec};
use codigo_loadtest::scratch::Server;
use codigo_loadtest::target::Ingest;
use codigo_testkit::{flags, ScratchDir, TestConsumer, TestEnv, TestProducer};

const TOKEN: &str = "loadtest-smoke-token-01";

async fn start_producer(env: &TestEnv) -> (SocketAddr, TestProducer) {
    let producer = TestProducer::start(env, &flags(&format!("--api-keys smoke:{TOKEN}"))).await;
    (producer.addr, producer)
}

async fn start_consumer(env: &TestEnv) -> TestConsumer {
    let settings = "--job-types ledger.post --max-deliver 4 --ack-wait-secs 5 --backoff-secs 1";
    TestConsumer::spawn(env, &flags(settings)).await
}

fn spec(ingest: Ingest, load: Load, duration: Option<Duration>, jobs: Option<u64>) -> RunSpec {
    RunSpec {
        ingest,
        load,
        duration,
        jobs,
        batch_size: 20,
        accounts: 7,
        job_bytes: 512,
        tenant: "smoke".into(),
        max_in_flight: 64,
        max_backlog: Some(500),
        e2e: true,
        drain_timeout: Duration::from_secs(60),
        progress: false,
    }
}

fn assert_consistent(what: &str, report: &Report) {
    let jobs = &report.jobs;
    assert!(jobs.sent > 0, "{what}: nothing sent: {jobs:?}");
    assert_eq!(jobs.sent, jobs.accepted + jobs.rejected, "{what}: {jobs:?}");
    assert_eq!(jobs.rejected, 0, "{what}: {:?}", report.errors);
    assert_eq!(jobs.completed, jobs.accepted, "{what}: {jobs:?}");
    assert_eq!((jobs.failed, jobs.unfinished), (0, 0), "{what}: {jobs:?}");
    assert_eq!(
        report.e2e_latency.map(|l| l.count),
        Some(jobs.completed),
        "{what}: one end-to-end sample per completed job"
    );
    assert!(report.ingest_latency.is_some_and(|l| l.count > 0), "{what}");
    assert!((report.success_ratio - 1.0).abs() < 1e-9, "{what}");
    assert!(report.text().contains("jobs_completed"), "{what}");
}

/// Runs `spec` to its end and checks that its counts add up.
async fn run_consistent(what: &str, spec: RunSpec, endpoints: &Endpoints) -> Report {
    let report = run::run(&spec, endpoints)
        .await
        .unwrap_or_else(|error| panic!("{what} did not complete: {error}"));
    assert_consistent(what, &report);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_closed_loops_account_for_every_job() {
    let env = TestEnv::new().await;
    let (addr, producer) = start_producer(&env).await;
    let consumer = start_consumer(&env).await;
    let endpoints = Endpoints {
        producer_url: format!("http://{addr}"),
        api_key: Some(TOKEN.into()),
        nats: env.nats.clone(),
        names: env.names.clone(),
        pool: Some(env.pool.clone()),
    };

    let open_loop = spec(
        Ingest::Single,
        Load::Open { rate: 100.0 },
        Some(Duration::from_secs(1)),
        None,
    );
    run_consistent("open loop, single", open_loop, &endpoints).await;

    let closed_loop = spec(
        Ingest::Batch,
        Load::Closed { concurrency: 2 },
        None,
        Some(150),
    );
    let closed = run_consistent("closed loop, batch", closed_loop, &endpoints).await;
    assert_eq!(closed.jobs.sent, 150, "stops at the job count");
    assert_eq!(
        closed.ingest_latency.map(|l| l.count),
        Some(8),
        "8 requests of ≤ 20"
    );

    let direct = spec(
        Ingest::Nats,
        Load::Closed { concurrency: 8 },
        None,
        Some(60),
    );
    run_consistent("closed loop, nats", direct, &endpoints).await;

    // The binary itself, as a person runs it: JSON summary and a plot.
    let dir = ScratchDir::new("loadtest-smoke");
    let plot = dir.join("latency.svg");
    let output = tokio::process::Command::from(env.command("codigo-loadtest"))
        .args(["--ingest", "batch", "--batch-size", "10", "--jobs", "40"])
        .args(["--concurrency", "2", "--json", "--plot"])
        .arg(&plot)
        .env("CODIGO_PRODUCER_URL", format!("http://{addr}"))
        .env("CODIGO_LOADTEST_API_KEY", TOKEN)
        .output()
        .await
        .expect("codigo-loadtest runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is the JSON summary");
    assert_eq!(summary["jobs"]["sent"], 40, "{summary}");
    assert_eq!(summary["jobs"]["completed"], 40, "{summary}");
    assert_eq!(summary["jobs"]["rejected"], 0, "{summary}");
    assert!(summary["e2e_latency"]["p99_ms"].is_number(), "{summary}");
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.starts_with("<svg") && svg.contains("end to end"));
    drop(dir);

    consumer.stop().await;
    producer.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_measures_and_removes_its_namespace_and_database() {
    let env = TestEnv::bare().await;
    let server = Server::from_database_url(&env.database_url).expect("valid URL");
    let spec = BaselineSpec {
        jobs: 300,
        workers: 2,
        fetch_batch: 50,
        publish_window: 100,
        accounts: 5,
        job_bytes: 512,
        replicas: 1,
    };
    let report = baseline::run(&spec, &env.nats, &server)
        .await
        .expect("baseline completes");
    assert_eq!(report.jobs, 300);
    for rate in [
        report.publish_per_sec,
        report.consume_ack_per_sec,
        report.pipeline_live_per_sec,
        report.pipeline_drain_per_sec,
    ] {
        assert!(rate.is_finite() && rate > 0.0, "{report:?}");
    }
    assert!(report.text().contains("bare_pipeline_drain"));
    assert_eq!(server.alive(), 0, "the baseline's scratch was removed");
    env.cleanup().await;
}
