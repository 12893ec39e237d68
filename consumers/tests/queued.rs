//! Every accepted job is known from its 202 on, against real NATS and Postgres: the gateway
//! writes a `queued` row, with the job's work-stream sequence, before it answers, on every
//! submission route; a worker takes the row over; a job whose row cannot be written is
//! accepted all the same, counted, and known once a worker records it.

use codigo_testkit::http::{Reply, ALPHA, BETA};
use codigo_testkit::{id_of, ledger_payload, metric_value, TestConsumer, TestEnv, TestProducer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

async fn status_of(gateway: &TestProducer, id: Uuid) -> Reply {
    gateway.get(&format!("/v1/jobs/{id}"), ALPHA).await
}

/// The id in the envelope stored at `sequence` of the work stream.
async fn job_at(env: &TestEnv, sequence: i64) -> Uuid {
    let stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("work stream");
    let message = stream
        .get_raw_message(u64::try_from(sequence).expect("a sequence"))
        .await
        .expect("the row's message is in the work stream");
    let envelope: Value = serde_json::from_slice(&message.payload).expect("an envelope");
    id_of(&envelope)
}

#[tokio::test]
async fn an_accepted_job_answers_queued_from_its_202_then_what_its_worker_records() {
    let env = TestEnv::new().await;
    // No consumer yet: nothing but the gateway can have told Postgres about these jobs.
    let gateway = TestProducer::start(&env, &[]).await;

    let single = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("single", 100), "idempotency_key": "once"}),
        )
        .await;
    single.assert_status(StatusCode::ACCEPTED);
    let batch = gateway
        .post(
            "/v1/jobs/batch",
            ALPHA,
            json!({"jobs": [
                {"type": "ledger.post", "payload": ledger_payload("batch-1", 100)},
                {"type": "ledger.post", "payload": ledger_payload("batch-2", 100), "delay": 600},
                {"type": "ledger.post", "payload": {"account": "no amount"}},
                {"type": "ledger.post", "payload": ledger_payload("batch-3", 100)},
            ]}),
        )
        .await;
    batch.assert_status(StatusCode::ACCEPTED);
    let event = gateway
        .post_event(
            ALPHA,
            json!({"specversion": "1.0", "id": "evt-1", "source": "/queued-test",
                   "type": "ledger.post", "data": ledger_payload("event", 100)}),
        )
        .await;
    event.assert_status(StatusCode::ACCEPTED);

    let results = batch.body["results"].as_array().expect("results");
    let queued: Vec<Uuid> = [&single.body, &results[0], &results[3], &event.body]
        .into_iter()
        .map(id_of)
        .collect();
    for &id in &queued {
        let reply = status_of(&gateway, id).await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.body["status"], "queued", "{}", reply.text);
        assert_eq!(reply.body["attempts"], 0, "{}", reply.text);
        assert!(reply.body["started_at"].is_null(), "{}", reply.text);
        assert!(reply.body["finished_at"].is_null(), "{}", reply.text);
        // Its own tenant's only.
        gateway
            .get(&format!("/v1/jobs/{id}"), BETA)
            .await
            .assert_problem(StatusCode::NOT_FOUND, "not-found");
    }
    assert_eq!(
        status_of(&gateway, queued[0]).await.body["idempotency_key"],
        "once"
    );
    // The delayed item has its row too, with its time; the refused one is nowhere.
    let delayed = status_of(&gateway, id_of(&results[1])).await;
    assert_eq!(delayed.body["status"], "scheduled", "{}", delayed.text);
    assert_eq!(
        delayed.body["run_at"], results[1]["run_at"],
        "{}",
        delayed.text
    );
    let delayed_row: (String, Option<i64>) =
        sqlx::query_as("SELECT status, stream_sequence FROM jobs WHERE id = $1")
            .bind(id_of(&results[1]))
            .fetch_one(&env.pool)
            .await
            .expect("the delayed job's row");
    assert_eq!(delayed_row, ("scheduled".to_owned(), None));
    assert_eq!(results[2]["status"], "rejected", "{}", batch.text);
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT id, status, stream_sequence FROM jobs WHERE stream_sequence IS NOT NULL",
    )
    .fetch_all(&env.pool)
    .await
    .expect("rows");
    assert_eq!(rows.len(), queued.len(), "one row per queued job: {rows:?}");
    // Each row points at its own message, as the max-deliveries path relies on.
    for (id, status, sequence) in rows {
        assert!(queued.contains(&id), "{id}");
        assert_eq!(status, "queued");
        assert_eq!(job_at(&env, sequence).await, id);
    }

    // A resubmission is a duplicate and leaves the row alone.
    let again = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("single", 100), "idempotency_key": "once"}),
        )
        .await;
    assert_eq!(again.body["duplicate"], true, "{}", again.text);
    assert_eq!(id_of(&again.body), queued[0]);

    // A worker takes over: awaited, each ends succeeded after one attempt.
    let consumer = TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await;
    for &id in &queued {
        let reply = gateway.get(&format!("/v1/jobs/{id}?wait=30s"), ALPHA).await;
        assert_eq!(reply.body["status"], "succeeded", "{}", reply.text);
        assert_eq!(reply.body["attempts"], 1, "{}", reply.text);
        assert!(!reply.body["started_at"].is_null(), "{}", reply.text);
    }
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(entries, 4, "each queued job applied once");

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_whose_row_cannot_be_written_is_accepted_counted_and_known_once_it_runs() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;
    // The gateway cannot write: its insert fails as on a Postgres that refuses writes.
    sqlx::query("ALTER TABLE jobs RENAME TO jobs_elsewhere")
        .execute(&env.pool)
        .await
        .expect("rename");

    let reply = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("unrecorded", 100)}),
        )
        .await;
    reply.assert_status(StatusCode::ACCEPTED);
    let id = id_of(&reply.body);
    let metrics = reqwest::get(gateway.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metric_value(&metrics, "codigo_gateway_jobs_unrecorded_total", &[])
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    sqlx::query("ALTER TABLE jobs_elsewhere RENAME TO jobs")
        .execute(&env.pool)
        .await
        .expect("rename back");
    let consumer = TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await;
    let reply = gateway.get(&format!("/v1/jobs/{id}?wait=30s"), ALPHA).await;
    assert_eq!(reply.body["status"], "succeeded", "{}", reply.text);

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}

/// The columns a job's `running` mark and its outcome change. No index may cover one of them,
/// as a key or in its predicate: that would turn each of those updates into a new row version
/// with an entry in every index (migrations 0009 and 0010).
const UPDATED_BY_WORKERS: [&str; 8] = [
    "status",
    "attempts",
    "result",
    "error",
    "started_at",
    "finished_at",
    "retry_at",
    "expires_at",
];

#[tokio::test]
async fn a_gateway_row_is_marked_and_finished_in_place_touching_no_index() {
    let env = TestEnv::new().await;

    // Read together: every index of `jobs`, keys and predicates, against the columns the
    // workers' statements write.
    let indexes: Vec<(String, String)> =
        sqlx::query_as("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs'")
            .fetch_all(&env.pool)
            .await
            .expect("the indexes of jobs");
    assert!(indexes.len() >= 2, "{indexes:?}");
    for (name, definition) in &indexes {
        let words: Vec<&str> = definition
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        for column in UPDATED_BY_WORKERS {
            assert!(
                !words.contains(&column),
                "{name} covers {column}, which workers update: {definition}"
            );
        }
    }

    // And as Postgres counts them: 200 jobs through the gateway, marked and finished by a
    // worker; their updates are HOT updates (a few may not find room on their page).
    let gateway = TestProducer::start(&env, &[]).await;
    let mut ids = Vec::new();
    for batch in 0..2 {
        let jobs: Vec<Value> = (0..100)
            .map(|n| json!({"type": "ledger.post", "payload": ledger_payload(&format!("hot-{batch}-{n}"), 100)}))
            .collect();
        let reply = gateway
            .post("/v1/jobs/batch", ALPHA, json!({ "jobs": jobs }))
            .await;
        reply.assert_status(StatusCode::ACCEPTED);
        ids.extend(
            reply.body["results"]
                .as_array()
                .expect("the batch's results")
                .iter()
                .map(id_of),
        );
    }
    let consumer = TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await;
    env.eventually(
        "every job succeeded",
        std::time::Duration::from_secs(60),
        || async {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'succeeded'",
            )
            .bind(&ids)
            .fetch_one(&env.pool)
            .await
            .expect("count");
            done == 200
        },
    )
    .await;
    // A backend's statistics reach the views when it exits, at the latest.
    consumer.stop().await;
    gateway.stop().await;
    let counted = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs'",
        )
        .fetch_one(&env.pool)
        .await
        .expect("table statistics")
    };
    env.eventually(
        "the row updates are counted",
        std::time::Duration::from_secs(30),
        || async { counted().await.0 >= 400 },
    )
    .await;
    let (updates, hot) = counted().await;
    assert!(
        hot * 10 >= updates * 8,
        "{hot} of {updates} row updates were HOT; an index on a column the workers write?"
    );
    env.cleanup().await;
}
