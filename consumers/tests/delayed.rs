//! Delayed jobs end to end against real NATS and Postgres: `run_at` and `delay` on every
//! submission route, a delayed job visible as `scheduled` from its 202, started no earlier
//! than its time by the server's message schedule, with no process of ours running when it
//! is due; the refusals of a time that cannot be kept; and cancellation before it is due.
use std::time::Duration;

use codigo_testkit::http::{ALPHA, BETA};
use codigo_testkit::{id_of, ledger_payload, metric_value, TestConsumer, TestEnv, TestProducer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).expect("formattable")
}

fn time_of(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a time"), &Rfc3339).expect("RFC 3339")
}

/// When a worker started job `id`, once it has.
async fn started_at(env: &TestEnv, id: Uuid) -> Option<OffsetDateTime> {
    sqlx::query_scalar("SELECT started_at FROM jobs WHERE id = $1 AND status = 'succeeded'")
        .bind(id)
        .fetch_optional(&env.pool)
        .await
        .expect("query")
        .flatten()
}

async fn wait_succeeded(env: &TestEnv, ids: &[Uuid]) {
    for &id in ids {
        env.eventually(
            &format!("job {id} to succeed"),
            Duration::from_secs(30),
            || async move { started_at(env, id).await.is_some() },
        )
        .await;
    }
}

async fn start_consumer(env: &TestEnv) -> TestConsumer {
    TestConsumer::spawn(env, &["--job-types", "ledger.post"]).await
}

#[tokio::test]
async fn delayed_jobs_wait_for_their_time_on_every_route_then_run() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;
    let consumer = start_consumer(&env).await;

    let accepted = OffsetDateTime::now_utc();
    let single = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("delay", 100), "delay": 3}),
        )
        .await;
    single.assert_status(StatusCode::ACCEPTED);
    assert_eq!(single.body["status"], "scheduled", "{}", single.text);
    let single_run_at = time_of(&single.body["run_at"]);
    assert!(single_run_at >= accepted + Duration::from_secs(3));

    // Whole microseconds: the gateway keeps a time to the microsecond, as Postgres does.
    let due = OffsetDateTime::now_utc() + Duration::from_secs(3);
    let due = due.replace_microsecond(due.microsecond()).expect("a time");
    let batch = gateway
        .post(
            "/v1/jobs/batch",
            ALPHA,
            json!({"jobs": [
                {"type": "ledger.post", "payload": ledger_payload("batch-later", 100), "run_at": rfc3339(due)},
                {"type": "ledger.post", "payload": ledger_payload("batch-now", 100)},
                {"type": "ledger.post", "payload": ledger_payload("batch-past", 100), "run_at": "2020-01-01T00:00:00Z"},
            ]}),
        )
        .await;
    batch.assert_status(StatusCode::ACCEPTED);
    let results = batch.body["results"].as_array().expect("results");
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["scheduled", "queued", "queued"],
        "{}",
        batch.text
    );
    assert_eq!(time_of(&results[0]["run_at"]), due);
    assert!(results[1].get("run_at").is_none(), "{}", batch.text);

    let event = gateway
        .post_event(
            ALPHA,
            json!({"specversion": "1.0", "id": "evt-1", "source": "/delayed-test",
                   "type": "ledger.post", "delay": "2.5", "data": ledger_payload("event", 100)}),
        )
        .await;
    event.assert_status(StatusCode::ACCEPTED);
    let binary = gateway
        .post_raw(
            "/v1/events",
            Some(ALPHA),
            &[
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-id", "evt-2"),
                ("ce-source", "/delayed-test"),
                ("ce-type", "ledger.post"),
                ("ce-runat", &rfc3339(due)),
            ],
            ledger_payload("binary-event", 100).to_string(),
        )
        .await;
    binary.assert_status(StatusCode::ACCEPTED);

    // Known from the 202 on, and to its own tenant only.
    let id = id_of(&single.body);
    let status = gateway.get(&format!("/v1/jobs/{id}"), ALPHA).await;
    status.assert_status(StatusCode::OK);
    assert_eq!(status.body["status"], "scheduled", "{}", status.text);
    assert_eq!(status.body["attempts"], 0);
    assert_eq!(time_of(&status.body["run_at"]), single_run_at);
    gateway
        .get(&format!("/v1/jobs/{id}"), BETA)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");

    let delayed = [(id, single_run_at), (id_of(&results[0]), due)];
    wait_succeeded(
        &env,
        &[
            id_of(&results[0]),
            id_of(&results[1]),
            id_of(&results[2]),
            id,
        ],
    )
    .await;
    for (id, run_at) in delayed {
        let started = started_at(&env, id).await.expect("started");
        assert!(
            started >= run_at,
            "job {id} started at {started}, before its run_at {run_at}"
        );
    }
    let done = gateway.get(&format!("/v1/jobs/{id}"), ALPHA).await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.text);
    env.eventually(
        "both delayed events to run",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM ledger_entries WHERE account IN ('event', 'binary-event')",
            )
            .fetch_one(&env.pool)
            .await
            .unwrap()
                == 2
        },
    )
    .await;
    // How late each delayed job started is measured; jobs that were not delayed are not.
    let metrics = consumer.metrics().await;
    let lag = |suffix: &str, labels: &[(&str, &str)]| {
        metric_value(
            &metrics,
            &format!("codigo_job_start_lag_seconds_{suffix}"),
            labels,
        )
    };
    let ledger_type = [("job_type", "ledger.post")];
    // At least the four above: the other tests of this binary share its metrics recorder.
    assert!(
        lag("count", &ledger_type).is_some_and(|n| n >= 4.0),
        "{metrics}"
    );
    assert!(
        lag("sum", &ledger_type).is_some_and(|s| s >= 0.0),
        "{metrics}"
    );

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_delayed_job_runs_when_due_with_no_process_of_ours_running_then() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;
    let accepted = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("restart", 100), "delay": 2,
                   "idempotency_key": "restart-1"}),
        )
        .await;
    accepted.assert_status(StatusCode::ACCEPTED);
    let id = id_of(&accepted.body);
    let run_at = time_of(&accepted.body["run_at"]);
    // The same key again is the same job, still waiting.
    let again = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("restart", 100), "delay": 2,
                   "idempotency_key": "restart-1"}),
        )
        .await;
    assert_eq!(id_of(&again.body), id);
    assert_eq!(again.body["duplicate"], true, "{}", again.text);
    gateway.stop().await;

    // Due while nothing of ours runs: the server moves it to the work stream on time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let consumer = start_consumer(&env).await;
    wait_succeeded(&env, &[id]).await;
    assert!(started_at(&env, id).await.unwrap() >= run_at);
    let entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE account = 'restart'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(entries, 1, "the delayed job ran exactly once");

    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn times_that_cannot_be_kept_are_refused_and_nothing_is_stored() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &["--max-delay", "1h"]).await;
    let refused = [
        (
            json!({"delay": 5, "run_at": "2030-01-01T00:00:00Z"}),
            "send one of them",
        ),
        (json!({"run_at": "next tuesday"}), "RFC 3339"),
        (json!({"delay": -1}), "0 or more"),
        (json!({"delay": 7200}), "CODIGO_MAX_DELAY"),
        (
            json!({"run_at": rfc3339(OffsetDateTime::now_utc() + Duration::from_secs(7200))}),
            "at most 1h",
        ),
        (json!({"delay": "soon"}), "delay"),
    ];
    for (when, says) in refused {
        let mut body = json!({"type": "ledger.post", "payload": ledger_payload("refused", 100)});
        body.as_object_mut()
            .unwrap()
            .extend(when.as_object().unwrap().clone());
        let reply = gateway.post("/v1/jobs", ALPHA, body).await;
        reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
        assert!(
            reply.body["detail"].as_str().unwrap().contains(says),
            "{}",
            reply.text
        );
    }
    let event = gateway
        .post_event(
            ALPHA,
            json!({"specversion": "1.0", "id": "evt-bad", "source": "/delayed-test",
                   "type": "ledger.post", "delay": "later", "data": ledger_payload("refused", 100)}),
        )
        .await;
    assert_eq!(event.status, StatusCode::BAD_REQUEST, "{}", event.text);
    for stream in [env.names.jobs_stream(), env.names.scheduled_stream()] {
        assert_eq!(
            env.messages_in(&stream).await,
            0,
            "a refused job is never stored"
        );
    }

    gateway.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_delayed_job_cancelled_before_it_falls_due_never_runs() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;
    let consumer = start_consumer(&env).await;

    let doomed = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("cancelled", 100), "delay": 2}),
        )
        .await;
    doomed.assert_status(StatusCode::ACCEPTED);
    let id = id_of(&doomed.body);
    let path = format!("/v1/jobs/{id}");

    // Another tenant cannot see it, let alone cancel it.
    gateway
        .delete(&path, BETA)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");
    for _ in 0..2 {
        let reply = gateway.delete(&path, ALPHA).await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(
            reply.body,
            json!({"id": id.to_string(), "status": "cancelled"})
        );
    }
    let status = gateway.get(&path, ALPHA).await;
    assert_eq!(status.body["status"], "cancelled", "{}", status.text);
    assert!(status.body["finished_at"].is_string(), "{}", status.text);

    // A job past cancelling says what it is.
    let ran = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("not-cancelled", 100)}),
        )
        .await;
    let ran_id = id_of(&ran.body);
    wait_succeeded(&env, &[ran_id]).await;
    let refused = gateway.delete(&format!("/v1/jobs/{ran_id}"), ALPHA).await;
    refused.assert_problem(StatusCode::CONFLICT, "job-not-cancellable");
    assert_eq!(refused.body["job_status"], "succeeded", "{}", refused.text);
    gateway
        .delete(&format!("/v1/jobs/{}", Uuid::now_v7()), ALPHA)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");

    // Well past its time, the cancelled job has not run, and is still cancelled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE account = 'cancelled'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(entries, 0, "a cancelled job ran");
    assert_eq!(gateway.get(&path, ALPHA).await.body["status"], "cancelled");
    assert_eq!(env.messages_in(&env.names.scheduled_stream()).await, 0);

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}
