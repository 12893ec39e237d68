//! SIGTERM with jobs in flight: the consumer exits within its own shutdown budget (the one the
//! chart's grace period follows), even with Postgres hanging on a job, and every ack and nak it
//! sent before exiting reached the server.
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use codigo_testkit::TestEnv;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

async fn publish(env: &TestEnv, id: Uuid, account: &str, amount_cents: i64) {
    let payload = json!({"account": account, "amount_cents": amount_cents, "currency": "EUR"});
    let envelope = json!({
        "id": id.to_string(),
        "type": "ledger.post",
        "payload": payload,
        "created_at": OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format"),
        "tenant": "test",
    });
    env.js
        .send_publish(
            env.names.job_subject("ledger.post"),
            PublishMessage::build()
                .payload(Bytes::from(envelope.to_string()))
                .message_id(id.to_string()),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.pool)
        .await
        .expect("query")
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
    sqlx::query(
        "INSERT INTO jobs (id, type, status, attempts, created_at)
         VALUES ($1, 'ledger.post', 'running', 0, now())",
    )
    .bind(stuck)
    .execute(&env.pool)
    .await
    .expect("row");
    let mut locker = PgConnection::connect(&env.database_url)
        .await
        .expect("connect");
    locker.execute("BEGIN").await.expect("begin");
    sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(stuck)
        .execute(&mut locker)
        .await
        .expect("lock");
    sqlx::query(
        "INSERT INTO account_balances (tenant, account, currency, balance_cents)
         VALUES ('test', 'slow', 'EUR', 0)",
    )
    .execute(&env.pool)
    .await
    .expect("balance");
    sqlx::query("SELECT 1 FROM account_balances WHERE account = 'slow' FOR UPDATE")
        .execute(&mut locker)
        .await
        .expect("lock");

    for _ in 0..FAST {
        publish(&env, Uuid::now_v7(), "acme", 1).await;
    }

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_codigo-consumer"))
        .envs(env.env_vars())
        .env("CODIGO_HTTP_ADDR", "127.0.0.1:0")
        .env("CODIGO_JOB_TYPES", "ledger.post")
        .env("CODIGO_ACK_WAIT_SECS", "60")
        .env("CODIGO_MAX_DELIVER", "4")
        .env("CODIGO_BACKOFF_SECS", "60")
        .env("CODIGO_FETCH_EXPIRES_MS", FETCH_EXPIRES_MS.to_string())
        .env(
            "CODIGO_SHUTDOWN_TIMEOUT_SECS",
            SHUTDOWN_TIMEOUT_SECS.to_string(),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("consumer binary starts");

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

    let pid = child.id().expect("pid");
    let sent = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running 60 s after SIGTERM; its budget is {budget:?}"))
        .expect("wait");
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
