//! Fair dispatch against real NATS and Postgres: with a flood of one tenant's jobs queued
//! first, another tenant's few jobs and the flooding tenant's own high-priority ones start
//! near the front, not behind the flood; every job still runs exactly once.
use std::time::Duration;

use codigo_testkit::http::{ALPHA, BETA};
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
