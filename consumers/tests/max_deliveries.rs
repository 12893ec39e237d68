//! A max-deliveries advisory whose message has already left the work stream still ends in a
//! dead letter, a `dead_lettered` jobs row, a metric and an error: nothing vanishes.
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use bytes::Bytes;
use codigo_consumer::runtime::{Done, JobCtx, JobError, JobTx, Worker};
use codigo_schemas::LedgerPost;
use codigo_testkit::{flags, header, metric_value, TestConsumer, TestEnv};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// Fails every job for a while: one delivery, one `retrying` row, no redelivery in the test.
struct RetryMuchLater;

#[async_trait]
impl Worker<LedgerPost> for RetryMuchLater {
    async fn work(&self, _job: &JobCtx<'_, LedgerPost>, _tx: &mut JobTx) -> Result<Done, JobError> {
        Err(JobError::retry_after(
            Some(Duration::from_secs(3600)),
            "target still failing",
        ))
    }
}

async fn start_consumer(env: &TestEnv) -> TestConsumer {
    let settings = "--job-types ledger.post --max-deliver 3 --ack-wait-secs 5 --backoff-secs 1";
    TestConsumer::spawn_with(env, &flags(settings), |app| {
        app.with_worker::<LedgerPost>(RetryMuchLater)
    })
    .await
}

/// What nats-server publishes when a message runs out of deliveries.
async fn advisory(env: &TestEnv, stream_seq: u64) {
    let durable = env.names.durable("ledger.post");
    let body = json!({
        "type": "io.nats.jetstream.advisory.v1.max_deliver",
        "id": Uuid::new_v4().simple().to_string(),
        "timestamp": OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format"),
        "stream": env.names.jobs_stream(),
        "consumer": durable,
        "stream_seq": stream_seq,
        "deliveries": 3,
    });
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{durable}",
        env.names.jobs_stream()
    );
    env.js
        .send_publish(
            subject,
            PublishMessage::build().payload(Bytes::from(body.to_string())),
        )
        .await
        .expect("publish")
        .await
        .expect("stored on the advisories stream");
}

/// `codigo_consumer_dead_letters_total{job_type="ledger.post",reason="max_deliveries"}`.
async fn max_deliveries_counted(consumer: &TestConsumer) -> f64 {
    let page = consumer.metrics().await;
    let labels = [("job_type", "ledger.post"), ("reason", "max_deliveries")];
    metric_value(&page, "codigo_consumer_dead_letters_total", &labels)
        .unwrap_or_else(|| panic!("no max_deliveries series on the page:\n{page}"))
}

#[tokio::test]
async fn an_advisory_for_a_message_already_gone_still_dead_letters_the_job() {
    let env = TestEnv::new().await;
    let consumer = start_consumer(&env).await;
    let id = Uuid::now_v7();
    let payload = json!({"account": "acme", "amount_cents": 5, "currency": "EUR"});
    let envelope = json!({
        "id": id.to_string(),
        "type": "ledger.post",
        "payload": payload,
        "idempotency_key": "order-7",
        "created_at": "2026-12-06T10:00:00Z",
        "tenant": "acme",
    });
    env.publish_envelope(&envelope).await;

    // Its first delivery fails; the row says retrying and where the message was.
    let found = std::sync::Mutex::new(None);
    env.eventually("the retry recorded", Duration::from_secs(60), || async {
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT status, stream_sequence FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&env.pool)
                .await
                .expect("query");
        match row {
            Some((status, Some(s))) if status == "retrying" => {
                *found.lock().expect("lock") = u64::try_from(s).ok();
                true
            }
            _ => false,
        }
    })
    .await;
    let seq = found.lock().expect("lock").expect("sequence");

    // The message leaves the stream (an operator, a limit, a late ack that got lost) before
    // the advisory for its last delivery is handled.
    let stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("stream");
    assert!(stream.delete_message(seq).await.expect("deleted"));
    advisory(&env, seq).await;
    // And one for a sequence Postgres has never heard of (the worker died before any write).
    advisory(&env, seq + 1000).await;

    let letters = env.dead_letters(2).await;
    let (known, unknown): (Vec<_>, Vec<_>) = letters
        .iter()
        .partition(|letter| !letter.payload.is_empty());
    assert_eq!((known.len(), unknown.len()), (1, 1));
    let known = known[0];
    assert_eq!(header(known, "Codigo-Dlq-Reason"), "max_deliveries");
    assert_eq!(header(known, "Codigo-Dlq-Attempts"), "3");
    assert_eq!(header(known, "Codigo-Job-Type"), "ledger.post");
    assert_eq!(
        header(known, "Codigo-Original-Subject"),
        env.names.job_subject("ledger.post")
    );
    let error = header(known, "Codigo-Dlq-Error");
    assert!(error.contains("left the stream"), "{error}");
    assert!(error.contains("target still failing"), "{error}");
    // The body is the job's envelope again, so that `codigo-ctl dlq replay` can run it.
    let body: Value = serde_json::from_slice(&known.payload).expect("JSON body");
    assert_eq!(body, envelope);

    let unknown = unknown[0];
    assert_eq!(header(unknown, "Codigo-Dlq-Reason"), "max_deliveries");
    assert_eq!(header(unknown, "Codigo-Job-Type"), "ledger.post");
    let error = header(unknown, "Codigo-Dlq-Error");
    assert!(error.contains("unknown"), "{error}");
    assert!(error.contains(&(seq + 1000).to_string()), "{error}");

    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .expect("row");
    assert_eq!(status, "dead_lettered");
    assert!(
        error.unwrap_or_default().contains("3 deliveries"),
        "the row says why"
    );
    assert_eq!(max_deliveries_counted(&consumer).await, 2.0);

    // A repeat of the same advisory (redelivered after a crash) adds nothing.
    advisory(&env, seq).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.dead_letters(2).await;
    consumer.stop().await;
    env.cleanup().await;
}
