//! Recovery without restarts: a worker carries on after its durable consumer is deleted and
//! recreated, and holds jobs (without dead-lettering them) while Postgres refuses writes.
use std::time::Duration;

use codigo_testkit::{flags, TestConsumer, TestEnv, SHORT_RETRIES};
use sqlx::{Connection, PgConnection};

/// Short retries, three deliveries and short waits between them.
fn settings() -> String {
    format!("{SHORT_RETRIES} --job-types ledger.post --max-deliver 3 --ack-wait-secs 3 --backoff-secs 3")
}

async fn start_consumer(env: &TestEnv) -> TestConsumer {
    TestConsumer::spawn(env, &flags(&settings())).await
}

async fn applied(env: &TestEnv, account: &str) -> i64 {
    env.ledger_entries(account).await
}

async fn dead_letters(env: &TestEnv) -> u64 {
    env.dead_letter_count().await
}

async fn wait_applied(env: &TestEnv, account: &str, expected: i64) {
    env.eventually(
        &format!("{expected} jobs applied to {account}"),
        Duration::from_secs(60),
        || async { applied(env, account).await == expected },
    )
    .await;
}

/// Publishes `count` jobs to `account` and waits until all are applied: the worker works.
async fn apply_jobs(env: &TestEnv, account: &str, count: usize) {
    env.publish_ledger_jobs(account, count).await;
    wait_applied(env, account, count as i64).await;
}

#[tokio::test]
async fn a_worker_rebinds_when_its_durable_consumer_is_deleted_and_carries_on() {
    let env = TestEnv::new().await;
    let consumer = start_consumer(&env).await;
    apply_jobs(&env, "before", 20).await;

    // An operator deletes the durable consumer under the running worker.
    let stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("stream");
    let durable = env.names.durable("ledger.post");
    // nats-server 2.9 sometimes fails the delete while it is writing the consumer's state
    // ("unlinkat ...: directory not empty"); an operator would try again, and so do we.
    let mut attempts = 0;
    while let Err(error) = stream.delete_consumer(&durable).await {
        attempts += 1;
        assert!(attempts < 20, "consumer not deleted: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    apply_jobs(&env, "after", 20).await;
    let info = stream
        .consumer_info(&durable)
        .await
        .expect("the worker created the consumer again");
    assert_eq!(
        info.config.max_deliver, 3,
        "recreated with the configured settings"
    );
    assert_eq!(dead_letters(&env).await, 0);
    consumer.stop().await;
    env.cleanup().await;
}

/// Runs `sql` against the test database's server as an administrator, then ends every other
/// session of the test database so that the next ones see the change.
async fn admin(env: &TestEnv, sql: &str) {
    let server = env
        .database_url
        .rsplit_once('/')
        .map(|(server, _)| server.to_owned())
        .expect("database URL");
    let mut conn = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("admin connection");
    sqlx::query(sql)
        .execute(&mut conn)
        .await
        .expect("admin SQL");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&env.database)
    .execute(&mut conn)
    .await
    .expect("sessions ended");
}

#[tokio::test]
async fn jobs_are_held_while_postgres_refuses_writes_and_finish_when_it_is_back() {
    let env = TestEnv::new().await;
    let consumer = start_consumer(&env).await;
    apply_jobs(&env, "warm-up", 1).await;

    // A failover leaves the database read-only for a while: every write fails with SQLSTATE
    // 25006 although nothing is wrong with the jobs.
    let database = env.database.clone();
    admin(
        &env,
        &format!("ALTER DATABASE {database} SET default_transaction_read_only = on"),
    )
    .await;
    let ids = env.publish_ledger_jobs("held", 5).await;
    // Longer than the ack wait and MaxDeliver × backoff: held jobs keep their first delivery.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(applied(&env, "held").await, 0, "no write got through");
    assert_eq!(
        dead_letters(&env).await,
        0,
        "a transient error is no reason to give up"
    );

    admin(
        &env,
        &format!("ALTER DATABASE {database} RESET default_transaction_read_only"),
    )
    .await;
    wait_applied(&env, "held", 5).await;
    let attempts = env.job_attempts(&ids).await;
    assert_eq!(attempts, vec![1; 5], "held in place, never redelivered");
    assert_eq!(dead_letters(&env).await, 0);
    consumer.stop().await;
    env.cleanup().await;
}
