//! Cancelling jobs past the schedules stream, end to end against real NATS and Postgres: a
//! queued job cancelled never takes effect and leaves the work stream; one whose message
//! stayed behind, or a delayed job cancelled once due, is skipped by the worker that meets
//! it; a running job cancelled may complete but is never retried, where a job not cancelled
//! waits for its retry (`retrying`, with when) and `codigo-ctl status` counts both; a
//! finished job cannot be cancelled.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use codigo_testkit::http::{ADMIN, ALPHA, BETA};
use codigo_testkit::{
    flags, id_of, ledger_job, metric_value, serve, TestConsumer, TestEnv, TestProducer,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn status(gateway: &TestProducer, id: impl std::fmt::Display) -> Value {
    gateway.get(&format!("/v1/jobs/{id}"), ALPHA).await.body
}

/// `codigo-ctl status`'s running and retrying counts of `job_type`.
async fn in_progress(env: &TestEnv, job_type: &str) -> (i64, i64) {
    let row = env.ctl_status_of(job_type).await;
    (
        row["running"].as_i64().expect("running"),
        row["retrying"].as_i64().expect("retrying"),
    )
}

#[tokio::test]
async fn a_queued_job_cancelled_never_takes_effect_and_leaves_the_work_stream() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;
    let kept = gateway.submit(ALPHA, ledger_job("kept")).await;
    let doomed = gateway.submit(ALPHA, ledger_job("doomed")).await;
    let path = format!("/v1/jobs/{doomed}");

    // Another tenant cannot see it, let alone cancel it.
    gateway
        .delete(&path, BETA)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");
    for _ in 0..2 {
        let reply = gateway.delete(&path, ALPHA).await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.body, json!({"id": doomed, "status": "cancelled"}));
    }
    let cancelled = status(&gateway, doomed).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(!cancelled["finished_at"].is_null(), "{cancelled}");
    assert_eq!(
        env.messages_in(&env.names.jobs_stream()).await,
        1,
        "only the kept job is left to run"
    );

    // A cancellation whose message stayed behind (its removal failed): the worker that meets
    // it acks it without running it.
    let stray = gateway.submit(ALPHA, ledger_job("stray")).await;
    sqlx::query("UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = $1::uuid")
        .bind(stray)
        .execute(&env.pool)
        .await
        .expect("cancel behind the gateway's back");
    // A delayed job cancelled after it fell due, while it waits in the work stream.
    let mut delayed = ledger_job("due");
    delayed["delay"] = json!(1);
    let due = gateway.submit(ALPHA, delayed).await;
    env.eventually(
        "the delayed job to fall due",
        Duration::from_secs(15),
        || async { env.messages_in(&env.names.jobs_stream()).await == 3 },
    )
    .await;
    assert_eq!(status(&gateway, due).await["status"], "queued");
    let reply = gateway.delete(&format!("/v1/jobs/{due}"), ALPHA).await;
    reply.assert_status(StatusCode::OK);

    let consumer = TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await;
    let done = gateway
        .get(&format!("/v1/jobs/{kept}?wait=30s"), ALPHA)
        .await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.text);
    env.eventually(
        "the cancelled jobs left behind to leave the work stream",
        Duration::from_secs(30),
        || async { env.messages_in(&env.names.jobs_stream()).await == 0 },
    )
    .await;
    assert_eq!(env.ledger_entries("kept").await, 1);
    for (id, account) in [(&doomed, "doomed"), (&stray, "stray"), (&due, "due")] {
        assert_eq!(
            env.ledger_entries(account).await,
            0,
            "{account} took effect"
        );
        assert_eq!(status(&gateway, id).await["status"], "cancelled");
    }
    let metrics = consumer.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "codigo_consumer_cancelled_total",
            &[("job_type", "ledger.post")]
        ),
        Some(2.0),
        "{metrics}"
    );

    // Finished: past cancelling.
    let refused = gateway.delete(&format!("/v1/jobs/{kept}"), ALPHA).await;
    refused.assert_problem(StatusCode::CONFLICT, "job-not-cancellable");
    assert_eq!(refused.body["job_status"], "succeeded", "{}", refused.text);

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_job_cancelled_may_finish_but_is_never_retried() {
    let env = TestEnv::new().await;
    // A function that takes two seconds and then fails as if it might succeed next time.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let function = serve(axum::Router::new().route(
        "/",
        axum::routing::post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }),
    ))
    .await;
    let gateway = TestProducer::start(&env, &[]).await;
    gateway
        .put(
            "/v1/job-types/test.slowfail",
            ADMIN,
            json!({
                "version": 1,
                "schema": {"type": "object"},
                "target": {"http": {"url": format!("http://{function}/"), "timeout": "10s"}},
                "retry": {"attempts": 5, "first_delay": "4s", "max_delay": "5s"},
                "concurrency": 2,
            }),
        )
        .await
        .assert_status(StatusCode::OK);
    let consumer = TestConsumer::spawn(
        &env,
        &flags("--job-types functions --webhook-signing-key cancel-test-master-key-0001"),
    )
    .await;
    let job = json!({"type": "test.slowfail", "payload": {}});
    let id = loop {
        let reply = gateway.post("/v1/jobs", ALPHA, job.clone()).await;
        if reply.status == StatusCode::ACCEPTED {
            break id_of(&reply.body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    env.eventually(
        "the function to be called",
        Duration::from_secs(30),
        || async { calls.load(Ordering::SeqCst) == 1 },
    )
    .await;
    assert_eq!(status(&gateway, id).await["status"], "running");
    assert_eq!(in_progress(&env, "test.slowfail").await, (1, 0));

    let reply = gateway.delete(&format!("/v1/jobs/{id}"), ALPHA).await;
    reply.assert_status(StatusCode::ACCEPTED);
    assert_eq!(reply.body["status"], "running", "{}", reply.text);
    let marked = status(&gateway, id).await;
    assert_eq!(marked["status"], "running", "{marked}");
    assert_eq!(marked["cancel_requested"], true, "{marked}");

    // The attempt fails; where a retry would follow, the job ends cancelled instead.
    let ended = gateway.get(&format!("/v1/jobs/{id}?wait=30s"), ALPHA).await;
    assert_eq!(ended.body["status"], "cancelled", "{}", ended.text);
    assert_eq!(ended.body["attempts"], 1, "{}", ended.text);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the function was called again"
    );
    assert_eq!(env.messages_in(&env.names.jobs_stream()).await, 0);

    // Not cancelled, the same failure is retried: `retrying`, with when the next attempt is.
    let retried = gateway.submit(ALPHA, job).await;
    env.eventually(
        "the job to wait for its retry",
        Duration::from_secs(30),
        || async { status(&gateway, retried).await["status"] == "retrying" },
    )
    .await;
    let waiting = status(&gateway, retried).await;
    let retry_at = time::OffsetDateTime::parse(
        waiting["retry_at"].as_str().expect("retry_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("an RFC 3339 time");
    assert!(
        retry_at > time::OffsetDateTime::now_utc(),
        "the next attempt is ahead: {waiting}"
    );
    assert!(waiting["error"].as_str().is_some(), "{waiting}");
    assert_eq!(in_progress(&env, "test.slowfail").await, (0, 1));

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}
