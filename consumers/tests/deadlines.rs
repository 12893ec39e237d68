//! Deadlines end to end against real NATS and Postgres: a job not started by its `expires_at`
//! (or `ttl`) is not run; it becomes `expired`, is counted, and is neither dead-lettered nor
//! left in the stream; a job started in time runs as any other.
use std::time::Duration;

use codigo_testkit::http::{Reply, ALPHA};
use codigo_testkit::{ledger_payload, metric_value, TestConsumer, TestEnv, TestProducer};
use reqwest::StatusCode;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[tokio::test]
async fn a_job_not_started_by_its_deadline_expires_and_is_not_run() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;

    let deadline = OffsetDateTime::now_utc() + Duration::from_millis(1500);
    let late = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("late", 100),
                   "expires_at": deadline.format(&Rfc3339).unwrap()}),
        )
        .await;
    late.assert_status(StatusCode::ACCEPTED);
    let late_id = late.body["id"].as_str().unwrap().to_owned();
    let in_time = gateway
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("in-time", 100), "ttl": 120}),
        )
        .await;
    in_time.assert_status(StatusCode::ACCEPTED);
    let in_time_id = in_time.body["id"].as_str().unwrap().to_owned();
    // The deadline is part of the answer from the 202 on (kept to the microsecond, as
    // Postgres keeps it); `ttl` counts from the submission.
    let deadline_of = |reply: &Reply| {
        let text = reply.body["expires_at"].as_str().expect("expires_at");
        OffsetDateTime::parse(text, &Rfc3339).expect("an RFC 3339 time")
    };
    let queued = gateway.get(&format!("/v1/jobs/{late_id}"), ALPHA).await;
    assert_eq!(queued.body["status"], "queued", "{}", queued.text);
    assert!(
        (deadline_of(&queued) - deadline).abs() < time::Duration::milliseconds(1),
        "{}",
        queued.text
    );
    let ttl = deadline_of(&gateway.get(&format!("/v1/jobs/{in_time_id}"), ALPHA).await)
        - OffsetDateTime::now_utc();
    assert!(
        ttl > time::Duration::seconds(110) && ttl <= time::Duration::seconds(120),
        "{ttl}"
    );

    // No worker until the first deadline has passed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let consumer = TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await;
    for (id, expected) in [(&in_time_id, "succeeded"), (&late_id, "expired")] {
        let reply = gateway.get(&format!("/v1/jobs/{id}?wait=30s"), ALPHA).await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.body["status"], expected, "{}", reply.text);
    }
    let expired = gateway.get(&format!("/v1/jobs/{late_id}"), ALPHA).await;
    assert!(expired.body["started_at"].is_null(), "{}", expired.text);
    assert!(expired.body["finished_at"].is_string(), "{}", expired.text);
    assert_eq!(
        deadline_of(&expired),
        deadline_of(&queued),
        "{}",
        expired.text
    );
    assert_eq!(env.ledger_entries("late").await, 0, "an expired job ran");
    assert_eq!(env.ledger_entries("in-time").await, 1);

    let metrics = consumer.metrics().await;
    let counted = |name: &str, labels: &[(&str, &str)]| metric_value(&metrics, name, labels);
    assert_eq!(
        counted(
            "codigo_consumer_expired_total",
            &[("job_type", "ledger.post")]
        ),
        Some(1.0),
        "{metrics}"
    );
    // Acked, not a dead letter, and gone from the work stream.
    for reason in ["permanent", "max_deliveries"] {
        assert_eq!(
            counted(
                "codigo_consumer_dead_letters_total",
                &[("job_type", "ledger.post"), ("reason", reason)]
            ),
            Some(0.0)
        );
    }
    env.eventually(
        "the work stream to empty",
        Duration::from_secs(10),
        || async { env.messages_in(&env.names.jobs_stream()).await == 0 },
    )
    .await;
    assert_eq!(env.messages_in(&env.names.dlq_stream()).await, 0);

    // A deadline that cannot be kept is refused at the door.
    for (when, says) in [
        (json!({"ttl": 0}), "more than 0"),
        (
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
            "past already",
        ),
        (json!({"delay": 60, "ttl": 30}), "never run"),
        (
            json!({"ttl": 5, "expires_at": "2030-01-01T00:00:00Z"}),
            "send one of them",
        ),
    ] {
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

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}
