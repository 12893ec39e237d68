//! Fair dispatch against real NATS and Postgres: with a flood of one tenant's jobs queued
//! first, another tenant's few jobs and the flooding tenant's own high-priority ones start
//! near the front, not behind the flood; every job still runs exactly once. Tenants' limits
//! hold across two worker processes and change without a restart.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use codigo_consumer::runtime::{Done, JobCtx, JobError, JobTx, Worker};
use codigo_schemas::LedgerPost;
use codigo_testkit::http::{ALPHA, BETA};
use codigo_testkit::ScratchDir;
use codigo_testkit::{flags, TestConsumer, TestEnv, TestProducer};
use reqwest::StatusCode;
use serde_json::{json, Value};

const FLOOD: usize = 3000;
const FEW: usize = 30;
const HIGH: usize = 20;
const TENANTS: &str = "alpha,acme";

fn ledger(account: &str, priority: Option<&str>) -> Value {
    let mut job = json!({
        "type": "ledger.post",
        "payload": {"account": account, "amount_cents": 1, "currency": "EUR"},
    });
    if let Some(priority) = priority {
        job["priority"] = json!(priority);
    }
    job
}

async fn submit_batch(producer: &TestProducer, token: &str, jobs: Vec<Value>) {
    for chunk in jobs.chunks(500) {
        producer
            .post("/v1/jobs/batch", token, json!({"jobs": chunk}))
            .await
            .assert_status(StatusCode::ACCEPTED);
    }
}

/// Where each account's jobs finished in the order of all finishes (1-based), latest first.
async fn last_rank(env: &TestEnv, account: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT max(rank) FROM (
             SELECT j.payload->>'account' AS account,
                    rank() OVER (ORDER BY j.finished_at) AS rank
               FROM jobs j) ranked
          WHERE account = $1",
    )
    .bind(account)
    .fetch_one(&env.pool)
    .await
    .expect("ranks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_does_not_make_another_tenant_or_a_high_priority_job_wait() {
    let env = TestEnv::new().await;
    let producer = TestProducer::start(&env, &["--tenants", TENANTS]).await;
    // alpha floods; its urgent jobs and acme's few come after the whole flood.
    let flood = (0..FLOOD).map(|_| ledger("flood", None)).collect();
    submit_batch(&producer, ALPHA, flood).await;
    let urgent = (0..HIGH).map(|_| ledger("urgent", Some("high"))).collect();
    submit_batch(&producer, ALPHA, urgent).await;
    let few = (0..FEW).map(|_| ledger("few", None)).collect();
    submit_batch(&producer, BETA, few).await;
    // A priority outside the three is refused at the door.
    producer
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "priority": "urgent",
                   "payload": {"account": "x", "amount_cents": 1, "currency": "EUR"}}),
        )
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);

    // Small groups make the order of starts visible.
    let consumer = TestConsumer::spawn(
        &env,
        &flags(&format!(
            "--job-types ledger.post --concurrency 16 --tenants {TENANTS}"
        )),
    )
    .await;
    let total = i64::try_from(FLOOD + HIGH + FEW).expect("small");
    env.eventually("every job applied", Duration::from_secs(120), || async {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
            .fetch_one(&env.pool)
            .await
            .expect("count");
        done == total
    })
    .await;
    consumer.stop().await;

    // acme shares the workers half and half with alpha while both have a backlog: its 30 jobs
    // are done within the first few groups, not after alpha's 3,020.
    let few_done = last_rank(&env, "few").await;
    assert!(
        few_done <= 200,
        "acme's last job finished {few_done}th of {total}"
    );
    // Within alpha's share, high goes 4 to normal's 2.
    let urgent_done = last_rank(&env, "urgent").await;
    assert!(
        urgent_done <= 200,
        "alpha's last high-priority job finished {urgent_done}th of {total}"
    );

    // Exactly once: one ledger entry per job, balances matching.
    let (entries, flood_balance): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledger_entries),
                (SELECT balance_cents FROM account_balances WHERE account = 'flood')",
    )
    .fetch_one(&env.pool)
    .await
    .expect("ledger");
    assert_eq!(entries, total);
    assert_eq!(flood_balance, i64::try_from(FLOOD).expect("small"));

    // The lanes' consumers are there and empty; the backlog metric and `status` add them up.
    let mut stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 0);
    for (tenant, priority) in [("alpha", "normal"), ("alpha", "high"), ("acme", "normal")] {
        let lane = codigo_common::lanes::Lane::new(Some(tenant), priority.parse().expect("p"));
        let durable = env.names.lane_durable("ledger.post", &lane);
        let info = stream.consumer_info(&durable).await.expect("lane consumer");
        assert!(info.delivered.stream_sequence > 0, "{durable} delivered");
    }
    producer.stop().await;
    env.cleanup().await;
}

/// Jobs that take 100 ms, counting how many of alpha's run at once across every consumer
/// that shares it.
#[derive(Default)]
struct Slow {
    alpha_now: AtomicUsize,
    alpha_most: AtomicUsize,
}

#[async_trait]
impl Worker<LedgerPost> for Slow {
    async fn work(&self, job: &JobCtx<'_, LedgerPost>, _tx: &mut JobTx) -> Result<Done, JobError> {
        let alpha = job.tenant == Some("alpha");
        if alpha {
            let now = self.alpha_now.fetch_add(1, Ordering::SeqCst) + 1;
            self.alpha_most.fetch_max(now, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if alpha {
            self.alpha_now.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(Done::new())
    }
}

async fn finished(env: &TestEnv, account: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND payload->>'account' = $1",
    )
    .bind(account)
    .fetch_one(&env.pool)
    .await
    .expect("count")
}

/// Seconds between the first and the last start of an account's jobs.
async fn start_span(env: &TestEnv, account: &str) -> f64 {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM max(started_at) - min(started_at))::float8
           FROM jobs WHERE payload->>'account' = $1",
    )
    .bind(account)
    .fetch_one(&env.pool)
    .await
    .expect("span")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_hold_across_two_workers_and_change_without_a_restart() {
    let env = TestEnv::new().await;
    let files = ScratchDir::new("tenants");
    let tenants = files.write("tenants", "alpha;concurrency=3\nacme;jobs_per_sec=10\n");
    let tenants = tenants.to_str().expect("utf-8 path").to_owned();
    let producer = TestProducer::start(&env, &["--tenants-file", &tenants]).await;
    let slow = Arc::new(Slow::default());
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let worker = slow.clone();
        let consumer = TestConsumer::spawn_with(
            &env,
            &flags(&format!(
                "--job-types ledger.post --concurrency 16 --tenants-file {tenants}"
            )),
            |app| app.with_worker::<LedgerPost>(worker),
        )
        .await;
        consumers.push(consumer);
    }

    // alpha: 30 jobs of 100 ms with room for 16 on each of two workers, yet never more than
    // 3 at once between them. acme: 40 jobs at 10 a second take about 4 s, whatever the room.
    submit_batch(
        &producer,
        ALPHA,
        (0..30).map(|_| ledger("capped", None)).collect(),
    )
    .await;
    submit_batch(
        &producer,
        BETA,
        (0..40).map(|_| ledger("paced", None)).collect(),
    )
    .await;
    env.eventually("the limited jobs done", Duration::from_secs(60), || async {
        finished(&env, "capped").await == 30 && finished(&env, "paced").await == 40
    })
    .await;
    let most = slow.alpha_most.load(Ordering::SeqCst);
    assert!(
        most <= 3,
        "{most} of alpha's jobs ran at once, over its concurrency of 3"
    );
    assert!(
        most >= 2,
        "alpha's jobs ran one at a time ({most}): the limit is not a cap"
    );
    let span = start_span(&env, "paced").await;
    // 40 starts at 10/s after a burst of one: at least 3.9 s; 3.5 leaves room for clocks.
    assert!(
        span >= 3.5,
        "acme's 40 jobs started within {span:.2} s, faster than 10/s"
    );

    // Lifting acme's rate in the file takes effect without a restart.
    std::fs::write(&tenants, "alpha;concurrency=3\nacme;jobs_per_sec=100000\n").expect("rewrite");
    tokio::time::sleep(Duration::from_secs(5)).await;
    submit_batch(
        &producer,
        BETA,
        (0..100).map(|_| ledger("unpaced", None)).collect(),
    )
    .await;
    env.eventually(
        "the unlimited jobs done",
        Duration::from_secs(60),
        || async { finished(&env, "unpaced").await == 100 },
    )
    .await;
    let span = start_span(&env, "unpaced").await;
    assert!(
        span < 5.0,
        "100 jobs took {span:.2} s to start: the old 10/s still holds"
    );

    for consumer in consumers {
        consumer.stop().await;
    }
    producer.stop().await;
    env.cleanup().await;
}
