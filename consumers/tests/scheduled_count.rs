//! The delayed jobs of each type are counted, for operators (`codigo-ctl status`) and
//! dashboards (`codigo_consumer_scheduled_jobs`), as they are accepted, cancelled and fall due.
//! A test binary of its own: the gauge is process-wide.
use std::time::Duration;

use codigo_testkit::http::ALPHA;
use codigo_testkit::{metric_value, TestConsumer, TestEnv, TestProducer};
use reqwest::StatusCode;
use serde_json::json;

async fn scheduled_in_status(env: &TestEnv) -> u64 {
    env.ctl_status_of("ledger.post").await["scheduled"]
        .as_u64()
        .expect("ledger.post is listed with its scheduled count")
}

async fn scheduled_gauge(consumer: &TestConsumer) -> Option<f64> {
    metric_value(
        &consumer.metrics().await,
        "codigo_consumer_scheduled_jobs",
        &[("job_type", "ledger.post")],
    )
}

#[tokio::test]
async fn delayed_jobs_are_counted_per_type_until_they_fall_due() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;
    let consumer = TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await;
    let mut ids = Vec::new();
    for (account, delay) in [("soon", 3), ("later", 600), ("cancelled", 600)] {
        let reply = gateway
            .post(
                "/v1/jobs",
                ALPHA,
                json!({"type": "ledger.post", "delay": delay,
                       "payload": {"account": account, "amount_cents": 1, "currency": "EUR"}}),
            )
            .await;
        reply.assert_status(StatusCode::ACCEPTED);
        ids.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(scheduled_in_status(&env).await, 3);
    gateway
        .delete(&format!("/v1/jobs/{}", ids[2]), ALPHA)
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(scheduled_in_status(&env).await, 2);

    // The first falls due and runs; the one ten minutes away is still counted.
    let done = gateway
        .get(&format!("/v1/jobs/{}?wait=30s", ids[0]), ALPHA)
        .await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.text);
    assert_eq!(scheduled_in_status(&env).await, 1);
    env.eventually(
        "the scheduled gauge to read 1",
        Duration::from_secs(20),
        || async { scheduled_gauge(&consumer).await == Some(1.0) },
    )
    .await;

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}
