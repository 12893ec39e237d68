//! Slots and progress: a slow job holds only its own slot, and a job whose settling is slow
//! (Postgres busy) keeps telling JetStream it is alive until its nak is sent.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use codigo_consumer::runtime::{Done, JobCtx, JobError, JobTx, Worker};
use codigo_schemas::LedgerPost;
use codigo_testkit::{envelope, flags, AlwaysRetry, TestConsumer, TestEnv};
use serde_json::json;
use sqlx::Executor;
use tokio::sync::Notify;
use uuid::Uuid;

async fn start_consumer(
    env: &TestEnv,
    extra: &[&str],
    worker: impl Worker<LedgerPost>,
) -> TestConsumer {
    let settings = flags("--job-types ledger.post --max-deliver 5 --backoff-secs 2");
    TestConsumer::spawn_with(env, &[&settings, extra].concat(), |app| {
        app.with_worker::<LedgerPost>(worker)
    })
    .await
}

async fn publish(env: &TestEnv, memo: &str) -> Uuid {
    let id = Uuid::now_v7();
    let payload = json!({"account": "acme", "amount_cents": 1, "currency": "EUR", "memo": memo});
    env.publish_envelope(&envelope(id, "ledger.post", "test", payload))
        .await;
    id
}

/// Jobs with memo `slow` wait until the test releases them (a target that never answers);
/// the others finish at once.
struct SomeNeverAnswer {
    released: Arc<Notify>,
    fast_done: Arc<AtomicUsize>,
}

#[async_trait]
impl Worker<LedgerPost> for SomeNeverAnswer {
    async fn work(&self, job: &JobCtx<'_, LedgerPost>, _tx: &mut JobTx) -> Result<Done, JobError> {
        if job.payload.memo.as_deref() == Some("slow") {
            self.released.notified().await;
        } else {
            self.fast_done.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Done::new())
    }
}

#[tokio::test]
async fn slow_jobs_hold_only_their_own_slots() {
    let env = TestEnv::new().await;
    const FAST: usize = 60;
    // The backlog is in place before the worker starts, so its first pull takes a whole group
    // with the slow jobs in it.
    for i in 0..FAST + 3 {
        publish(&env, if i % 3 == 0 && i < 9 { "slow" } else { "fast" }).await;
    }
    let released = Arc::new(Notify::new());
    let fast_done = Arc::new(AtomicUsize::new(0));
    let consumer = start_consumer(
        &env,
        &["--concurrency", "8", "--ack-wait-secs", "30"],
        Arc::new(SomeNeverAnswer {
            released: released.clone(),
            fast_done: fast_done.clone(),
        }),
    )
    .await;
    // Three of the eight slots stay taken; the other five carry every fast job through.
    env.eventually(
        "every fast job done while three never finish",
        Duration::from_secs(60),
        || async { fast_done.load(Ordering::SeqCst) == FAST },
    )
    .await;
    released.notify_waiters();
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_whose_retry_is_slow_to_record_is_not_redelivered() {
    let env = TestEnv::new().await;
    let id = Uuid::now_v7();
    // The job's row exists and the test holds a lock on it: recording the retry waits.
    let mut locker = env.lock_job_row(id).await;

    // Two replicas: a redelivery has an idle worker to go to.
    let retry_later = AlwaysRetry::after(Duration::from_secs(3600), "try again later");
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(
            start_consumer(
                &env,
                &["--concurrency", "4", "--ack-wait-secs", "2"],
                retry_later.clone(),
            )
            .await,
        );
    }
    let mut job = envelope(
        id,
        "ledger.post",
        "",
        json!({"account": "acme", "amount_cents": 1, "currency": "EUR"}),
    );
    job.as_object_mut().expect("envelope").remove("tenant");
    env.publish_envelope(&job).await;
    env.eventually("the job handled", Duration::from_secs(60), || async {
        retry_later.calls() >= 1
    })
    .await;
    // Four ack waits with the retry stuck behind the lock.
    tokio::time::sleep(Duration::from_secs(8)).await;
    locker.execute("ROLLBACK").await.expect("unlock");
    env.wait_job_status(id, "retrying").await;
    let stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("stream");
    let info = stream
        .consumer_info(env.names.durable("ledger.post"))
        .await
        .expect("consumer info");
    assert_eq!(
        retry_later.calls(),
        1,
        "handled once: never redelivered while its retry was being recorded"
    );
    assert_eq!(info.num_redelivered, 0);
    for replica in replicas {
        replica.stop().await;
    }
    env.cleanup().await;
}
