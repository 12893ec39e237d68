//! SIGTERM with jobs in flight: the consumer exits within its own shutdown budget (the one the
//! chart's grace period follows), even with Postgres hanging on a job, and every ack and nak it
//! sent before exiting reached the server.
use std::time::{Duration, Instant};

use codigo_testkit::{envelope, flags, TestEnv};
use serde_json::json;
use sqlx::{Connection, Executor};
use uuid::Uuid;

async fn publish(env: &TestEnv, id: Uuid, account: &str, amount_cents: i64) {
    let payload = json!({"account": account, "amount_cents": amount_cents, "currency": "EUR"});
    env.publish_envelope(&envelope(id, "ledger.post", "test", payload))
        .await;
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    env.count(sql).await
}

#[tokio::test]
async fn sigterm_exits_within_the_budget_with_every_ack_and_nak_delivered() {
    let env = TestEnv::new().await;
    const FAST: i64 = 40;
    const FETCH_EXPIRES_MS: u64 = 1000;
    const SHUTDOWN_TIMEOUT_SECS: u64 = 3;
    // fetch expiry + CODIGO_SHUTDOWN_TIMEOUT_SECS + hand-back (2 s) + flush (5 s).
    let budget = Duration::from_millis(FETCH_EXPIRES_MS)
        + Duration::from_secs(
            SHUTDOWN_TIMEOUT_SECS
                + codigo_consumer::config::HAND_BACK_SECS
                + codigo_consumer::config::FLUSH_SECS,
        );

    // A job that breaks its schema, whose jobs row the test keeps locked: its dead letter is
    // stored, then recording it in Postgres hangs past every timeout. And a job whose balance
    // row the test keeps locked: it hangs in its transaction past the drain timeout.
    let stuck = Uuid::now_v7();
    let mut locker = env.lock_job_row(stuck).await;
    env.insert_balance("test", "slow", "EUR", 0).await;
    sqlx::query("SELECT 1 FROM account_balances WHERE account = 'slow' FOR UPDATE")
        .execute(&mut locker)
        .await
        .expect("lock");

    for _ in 0..FAST {
        publish(&env, Uuid::now_v7(), "acme", 1).await;
    }

    let settings = format!(
        "--job-types ledger.post --ack-wait-secs 60 --max-deliver 4 \
         --backoff-secs 60 --fetch-expires-ms {FETCH_EXPIRES_MS} \
         --shutdown-timeout-secs {SHUTDOWN_TIMEOUT_SECS}"
    );
    let child = env.spawn_binary("codigo-consumer", &flags(&settings));

    env.eventually("the fast jobs applied", Duration::from_secs(60), || async {
        count(&env, "SELECT count(*) FROM ledger_entries").await == FAST
    })
    .await;
    // One after the other, so that each is a group of its own.
    publish(&env, stuck, "acme", 0).await;
    env.eventually(
        "the stuck job's dead letter stored",
        Duration::from_secs(60),
        || async {
            match env.js.get_stream(env.names.dlq_stream()).await {
                Ok(mut stream) => stream.info().await.is_ok_and(|i| i.state.messages == 1),
                Err(_) => false,
            }
        },
    )
    .await;
    // And one that outlasts the drain timeout: naked when the worker gives up on it.
    let slow = Uuid::now_v7();
    publish(&env, slow, "slow", 1).await;
    let stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("stream");
    env.eventually(
        "both slow jobs in flight",
        Duration::from_secs(60),
        || async {
            stream
                .consumer_info(env.names.durable("ledger.post"))
                .await
                .is_ok_and(|info| info.num_ack_pending == 2 && info.num_pending == 0)
        },
    )
    .await;

    let sent = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(60), child.stop())
        .await
        .unwrap_or_else(|_| panic!("still running 60 s after SIGTERM; its budget is {budget:?}"))
        .status;
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took <= budget,
        "exited {took:?} after SIGTERM, beyond its shutdown budget of {budget:?}"
    );

    // Every ack and nak sent before exit reached the server. The next worker to pull gets the
    // naked job at once; the acked jobs never come back, and the job whose Postgres write never
    // returned (no answer sent) only after its 60 s ack wait.
    let durable: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(&env.names.durable("ledger.post"))
        .await
        .expect("durable");
    let mut batch = durable
        .batch()
        .max_messages(10)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("pull");
    let mut next = Vec::new();
    while let Some(message) = futures::StreamExt::next(&mut batch).await {
        next.push(message.expect("message"));
    }
    assert_eq!(next.len(), 1, "only the naked job is handed out again");
    let envelope: serde_json::Value = serde_json::from_slice(&next[0].payload).expect("json");
    assert_eq!(envelope["id"], slow.to_string());
    assert_eq!(next[0].info().expect("info").delivered, 2);

    locker.execute("ROLLBACK").await.expect("unlock");
    locker.close().await.ok();
    env.cleanup().await;
}
