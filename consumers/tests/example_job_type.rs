//! The README's worked example (`examples/greeting.rs`) end to end: a job type declared in one
//! file is served, decoded, recorded and acknowledged by the runtime; a payload that breaks its
//! schema is dead-lettered.
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use clap::Parser;
use codigo_common::contract::JobState;
use codigo_schemas::Envelope;
use codigo_testkit::{InProcess, TestEnv};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

#[path = "../examples/greeting.rs"]
#[allow(dead_code)]
mod greeting;

async fn publish(env: &TestEnv, payload: Value) -> Uuid {
    let envelope = Envelope {
        id: Uuid::now_v7(),
        job_type: "greeting.send".into(),
        payload,
        idempotency_key: None,
        created_at: OffsetDateTime::now_utc(),
        tenant: None,
        run_at: None,
        expires_at: None,
        callback_url: None,
    };
    let body = serde_json::to_vec(&envelope).expect("json");
    let message = PublishMessage::build().payload(body.into());
    let subject = env.names.job_subject(&envelope.job_type);
    let ack = env
        .js
        .send_publish(subject, message)
        .await
        .expect("publish");
    ack.await.expect("stored");
    envelope.id
}

async fn row(env: &TestEnv, id: Uuid) -> Option<(JobState, Option<Value>)> {
    sqlx::query_as("SELECT status, result FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(&env.pool)
        .await
        .expect("jobs row")
}

#[tokio::test]
async fn a_job_type_in_one_file_runs_end_to_end() {
    let env = TestEnv::new().await;
    let config = codigo_consumer::Config::try_parse_from(env.service_args(
        "codigo-consumer",
        &["--job-types", "ledger.post", "--fetch-expires-ms", "1000"],
    ))
    .expect("valid consumer flags");
    let app = greeting::consumer(config).await.expect("consumer starts");
    let consumer = InProcess::spawn("consumer", app.local_addr(), |stop| {
        app.run_until_stopped(stop)
    });
    consumer.wait_ready().await;

    let greeted = publish(&env, json!({"name": "Ada"})).await;
    let refused = publish(&env, json!({"name": ""})).await;
    env.eventually("both jobs finished", Duration::from_secs(30), || async {
        let done = row(&env, greeted).await.map(|(state, _)| state);
        let dead = row(&env, refused).await.map(|(state, _)| state);
        done == Some(JobState::Succeeded) && dead == Some(JobState::DeadLettered)
    })
    .await;
    let (_, result) = row(&env, greeted).await.expect("row");
    assert_eq!(
        result.as_ref().and_then(|r| r.get("greeting")),
        Some(&json!("Hello, Ada!"))
    );

    consumer.stop().await;
    env.cleanup().await;
}
