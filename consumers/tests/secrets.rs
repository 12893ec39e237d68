//! The real `codigo-consumer` binary never writes its secrets (NATS password, database
//! password, webhook signing key) to its logs, `/readyz` or `/metrics`, on failing paths
//! and while delivering webhooks.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use codigo_testkit::{
    assert_no_secret, respond_with, unique_secrets, ChildProcess, NatsServer, TestEnv,
};
use serde_json::json;
use uuid::Uuid;

/// The real binary with exactly `vars` in its environment (nothing inherited), logging
/// everything.
fn start_consumer(vars: &[(&str, String)]) -> ChildProcess {
    let mut command = codigo_testkit::command_with_only("codigo-consumer", vars);
    command.env("LOG_FORMAT", "json").env("RUST_LOG", "trace");
    ChildProcess::spawn_service("codigo-consumer", command)
}

async fn get_text(http: &reqwest::Client, url: &str) -> String {
    for _ in 0..200 {
        if let Ok(response) = http.get(url).send().await {
            let status = response.status();
            return format!("{status} {}", response.text().await.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

#[tokio::test]
async fn failing_dependencies_do_not_leak_credentials() {
    let (unique, [nats_password, db_password, signing_key]) =
        unique_secrets(["nats-password", "db-password", "signing-key"]);
    let nats = NatsServer::with_user("codigo", &format!("right-{unique}"));

    let consumer = start_consumer(&[
        ("NATS_URL", nats.url()),
        ("NATS_USER", "codigo".to_owned()),
        ("NATS_PASSWORD", nats_password.clone()),
        (
            "DATABASE_URL",
            format!("postgres://codigo_nobody:{db_password}@127.0.0.1:5432/codigo_nowhere"),
        ),
        ("CODIGO_NAMESPACE", format!("t{}", &unique[..12])),
        ("CODIGO_WEBHOOK_SIGNING_KEY", signing_key.clone()),
    ]);
    let http = reqwest::Client::new();
    let ready = get_text(&http, &consumer.url("/readyz")).await;
    assert!(ready.starts_with("503"), "{ready}");
    consumer.wait_for_log("waiting for Postgres").await;
    consumer.wait_for_log("uthorization").await;
    let metrics = get_text(&http, &consumer.url("/metrics")).await;
    assert!(metrics.contains("codigo_consumer_acks_total"), "{metrics}");
    let secrets = [&nats_password, &db_password, &signing_key];
    assert_no_secret(
        "/readyz and /metrics",
        &format!("{ready}\n{metrics}"),
        &secrets,
    );

    let logs = consumer.stop().await.output;
    assert_no_secret("consumer logs", &logs, &secrets);
}

/// A webhook target that fails the first delivery (a retry, logged) and takes the next.
async fn flaky_target() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = respond_with(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            "503 Service Unavailable".into()
        } else {
            "200 OK".into()
        }
    })
    .await;
    (addr, hits)
}

#[tokio::test]
async fn signing_key_stays_out_of_logs_while_delivering_webhooks() {
    let env = TestEnv::new().await;
    let (_, [signing_key]) = unique_secrets(["signing-key"]);
    let (target, hits) = flaky_target().await;

    let mut vars = env.env_vars();
    vars.retain(|(name, _)| *name != "LOG_FORMAT");
    vars.extend([
        ("CODIGO_WEBHOOK_SIGNING_KEY", signing_key.clone()),
        ("CODIGO_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
        ("CODIGO_JOB_TYPES", "webhook.deliver".to_owned()),
        ("CODIGO_RETRY_BASE_MS", "50".to_owned()),
        ("CODIGO_RETRY_MAX_SECS", "1".to_owned()),
        ("CODIGO_MAX_DELIVER", "4".to_owned()),
        ("CODIGO_ACK_WAIT_SECS", "5".to_owned()),
        ("CODIGO_BACKOFF_SECS", "1".to_owned()),
        ("CODIGO_FETCH_EXPIRES_MS", "1000".to_owned()),
        ("CODIGO_SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
    ]);
    let consumer = start_consumer(&vars);

    let id = Uuid::now_v7();
    let envelope = json!({
        "id": id, "type": "webhook.deliver", "tenant": "acme",
        "created_at": "2026-01-02T03:04:05Z",
        "payload": {"url": format!("http://{target}/hook"), "body": {"order": 7},
                    "headers": {"X-Tenant-Ref": "acme-7"}}
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.to_string().as_str());
    env.js
        .publish_with_headers(
            env.names.job_subject("webhook.deliver"),
            headers,
            serde_json::to_vec(&envelope).expect("json").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");

    env.wait_job_status(id, "succeeded").await;
    assert!(hits.load(Ordering::SeqCst) >= 2, "a retry happened first");
    let metrics = get_text(&reqwest::Client::new(), &consumer.url("/metrics")).await;
    let logs = consumer.stop().await.output;
    assert!(
        logs.contains("job will be retried"),
        "the failed attempt was logged:\n{logs}"
    );
    assert_no_secret(
        "consumer logs and /metrics",
        &format!("{logs}\n{metrics}"),
        &[&signing_key],
    );
    env.cleanup().await;
}
