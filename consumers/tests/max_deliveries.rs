//! Jobs that run out of deliveries end as one dead letter each, whatever goes wrong on the
//! way: a max-deliveries advisory whose message has already left the work stream still ends in
//! a dead letter, a `dead_lettered` jobs row, a metric and an error; a message whose advisory
//! was lost is found by the sweep; the advisory and the sweep on one message store one letter.
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, consumer::PullConsumer, stream::Stream, AckKind};
use bytes::Bytes;
use codigo_consumer::dead_letters::DeadLetters;
use codigo_consumer::exhausted::{Exhausted, ExhaustedJobs};
use codigo_schemas::LedgerPost;
use codigo_testkit::{envelope, flags, header, metric_value, AlwaysRetry, TestConsumer, TestEnv};
use futures::StreamExt;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// Deliveries per job in these tests: `TestEnv`'s durables and the consumer agree on it.
const MAX_DELIVER: u64 = 4;

async fn start_consumer(env: &TestEnv, orphan_sweep: &str) -> TestConsumer {
    let settings = format!(
        "--job-types ledger.post --max-deliver {MAX_DELIVER} --ack-wait-secs 5 --backoff-secs 1 \
         --orphan-sweep-secs {orphan_sweep}"
    );
    TestConsumer::spawn_with(env, &flags(&settings), |app| {
        // Every job fails for a while: one delivery, one `retrying` row, no redelivery here.
        let retry_much_later =
            AlwaysRetry::after(Duration::from_secs(3600), "target still failing");
        app.with_worker::<LedgerPost>(retry_much_later)
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
        "deliveries": MAX_DELIVER,
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

/// The tests share the process's metrics: one at a time, each counting its own increase.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `codigo_consumer_dead_letters_total{job_type="ledger.post",reason="max_deliveries"}`, as
/// the consumer's page shows it (0 before the consumer registered it).
fn max_deliveries_counted() -> f64 {
    let page = codigo_common::telemetry::metrics().render();
    let labels = [("job_type", "ledger.post"), ("reason", "max_deliveries")];
    metric_value(&page, "codigo_consumer_dead_letters_total", &labels).unwrap_or(0.0)
}

async fn work_stream(env: &TestEnv) -> Stream {
    let name = env.names.jobs_stream();
    env.js.get_stream(name).await.expect("the work stream")
}

/// Waits until a failed delivery of job `id` is recorded; returns its stream sequence.
async fn retry_recorded(env: &TestEnv, id: Uuid) -> u64 {
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
    let seq = *found.lock().expect("lock");
    seq.expect("sequence")
}

#[tokio::test]
async fn an_advisory_for_a_message_already_gone_still_dead_letters_the_job() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let counted = max_deliveries_counted();
    let env = TestEnv::new().await;
    let consumer = start_consumer(&env, "30s").await;
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
    let seq = retry_recorded(&env, id).await;

    // The message leaves the stream (an operator, a limit, a late ack that got lost) before
    // the advisory for its last delivery is handled.
    let stream = work_stream(&env).await;
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
    assert_eq!(header(known, "Codigo-Dlq-Attempts"), "4");
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
        error.unwrap_or_default().contains("4 deliveries"),
        "the row says why"
    );
    assert_eq!(max_deliveries_counted() - counted, 2.0);

    // A repeat of the same advisory (redelivered after a crash) adds nothing.
    advisory(&env, seq).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.dead_letters(2).await;
    consumer.stop().await;
    env.cleanup().await;
}

/// One pull of at most one message, waiting up to `wait`.
async fn pull_one(consumer: &PullConsumer, wait: Duration) -> Option<jetstream::Message> {
    let pull = consumer.batch().max_messages(1).expires(wait);
    let mut batch = pull.messages().await.expect("pull");
    batch.next().await.map(|message| message.expect("message"))
}

/// A job that crashes every worker that takes it (no jobs row is ever written) and runs out of
/// deliveries while max-deliveries advisories are lost, in a namespace of its own.
struct Stranded {
    env: TestEnv,
    id: Uuid,
    job: Value,
    seq: u64,
    /// The dead letters counted before.
    counted: f64,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

async fn stranded() -> Stranded {
    let turn = ONE_AT_A_TIME.lock().await;
    let counted = max_deliveries_counted();
    let env = TestEnv::new().await;
    // Nothing captures the advisory: nats-server publishes it and it is gone.
    let advisories = env.names.advisories_stream();
    env.js.delete_stream(advisories).await.expect("deleted");
    let id = Uuid::now_v7();
    let payload = json!({"account": "crash", "amount_cents": 5, "currency": "EUR"});
    let job = envelope(id, "ledger.post", "acme", payload);
    env.publish_envelope(&job).await;
    // The test takes each delivery and hands it back, as a worker that dies on it would.
    let durable = env.names.durable("ledger.post");
    let stream = work_stream(&env).await;
    let consumer: PullConsumer = stream.get_consumer(&durable).await.expect("durable");
    let mut seq = 0;
    for _ in 0..MAX_DELIVER {
        let message = pull_one(&consumer, Duration::from_secs(10)).await;
        let message = message.expect("delivered");
        seq = message.info().expect("JetStream message").stream_sequence;
        message.ack_with(AckKind::Nak(None)).await.expect("nak");
    }
    env.eventually("no more deliveries", Duration::from_secs(30), || async {
        // A pull lets the server see that the deliveries ran out.
        assert!(pull_one(&consumer, Duration::from_millis(500))
            .await
            .is_none());
        let info = stream.consumer_info(&durable).await.expect("info");
        info.num_ack_pending == 0 && info.delivered.stream_sequence >= seq
    })
    .await;
    Stranded {
        env,
        id,
        job,
        seq,
        counted,
        _turn: turn,
    }
}

async fn in_work_stream(env: &TestEnv, seq: u64) -> bool {
    work_stream(env).await.get_raw_message(seq).await.is_ok()
}

#[tokio::test]
async fn a_job_whose_advisory_was_lost_is_dead_lettered_by_the_sweep() {
    let stranded = stranded().await;
    let (env, id, seq) = (&stranded.env, stranded.id, stranded.seq);
    // The consumer creates the advisories stream again, but the advisory fired already.
    let consumer = start_consumer(env, "1s").await;

    let letters = env.dead_letters(1).await;
    let letter = &letters[0];
    assert_eq!(header(letter, "Codigo-Dlq-Reason"), "max_deliveries");
    assert_eq!(header(letter, "Codigo-Dlq-Attempts"), "4");
    assert_eq!(header(letter, "Codigo-Job-Type"), "ledger.post");
    let subject = env.names.job_subject("ledger.post");
    assert_eq!(header(letter, "Codigo-Original-Subject"), subject);
    let body: Value = serde_json::from_slice(&letter.payload).expect("JSON body");
    assert_eq!(body, stranded.job, "the original body, replayable");
    env.wait_job_status(id, "dead_lettered").await;
    assert!(
        !in_work_stream(env, seq).await,
        "removed from the work stream"
    );
    assert_eq!(max_deliveries_counted() - stranded.counted, 1.0);

    // A job waiting for its retry (naked for an hour) is not the sweep's: several sweeps
    // later it is still in the stream and nothing more is dead-lettered.
    let held = Uuid::now_v7();
    let payload = json!({"account": "held", "amount_cents": 1, "currency": "EUR"});
    env.publish_envelope(&envelope(held, "ledger.post", "acme", payload))
        .await;
    let held_seq = retry_recorded(env, held).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(in_work_stream(env, held_seq).await);
    assert_eq!(env.dead_letter_count().await, 1);
    consumer.stop().await;
    stranded.env.cleanup().await;
}

#[tokio::test]
async fn the_advisory_and_the_sweep_on_one_message_store_one_dead_letter() {
    let stranded = stranded().await;
    let (env, id, seq) = (&stranded.env, stranded.id, stranded.seq);
    // Its own sweep is far off: this test plays the sweep and the advisory itself.
    let consumer = start_consumer(env, "1h").await;
    consumer.wait_ready().await;

    // The sweep and the advisory handle the message at the same time, with the code the
    // consumer runs for each of them.
    let exhausted = ExhaustedJobs {
        js: env.js.clone(),
        names: env.names.clone(),
        pool: env.pool.clone(),
        dead_letters: DeadLetters::new(env.js.clone(), env.names.clone()),
    };
    let found = Exhausted {
        stream_seq: seq,
        deliveries: MAX_DELIVER,
        consumer: env.names.durable("ledger.post"),
    };
    let (sweep, advisory_path) =
        tokio::join!(exhausted.dead_letter(&found), exhausted.dead_letter(&found));
    sweep.expect("sweep");
    advisory_path.expect("advisory");
    assert!(!in_work_stream(env, seq).await);
    env.wait_job_status(id, "dead_lettered").await;

    // Then the real advisory arrives, later still, through the consumer's advisory worker.
    advisory(env, seq).await;
    env.eventually(
        "the late advisory handled",
        Duration::from_secs(30),
        || async { env.messages_in(&env.names.advisories_stream()).await == 0 },
    )
    .await;
    env.dead_letters(1).await;
    assert_eq!(max_deliveries_counted() - stranded.counted, 1.0);
    consumer.stop().await;
    stranded.env.cleanup().await;
}
