//! The webhook client ignores `HTTP_PROXY` and its kin: a proxy would make the connection
//! for us, past the checks on the target's address. Alone in its test binary because it sets
//! process-wide environment variables, which must happen before any thread reads them.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use codigo_testkit::{flags, TestConsumer, TestEnv};
use serde_json::json;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use uuid::Uuid;

/// Accepts connections, counts them, reads one request and answers `status`.
async fn listener(status: u16, hits: Arc<AtomicUsize>, seen: Arc<Notify>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
            seen.notify_one();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buffer).await;
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr.to_string()
}

#[test]
fn webhook_delivery_ignores_http_proxy_settings() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let proxy_hits = Arc::new(AtomicUsize::new(0));
    let target_hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Notify::new());
    let proxy = runtime.block_on(listener(502, proxy_hits.clone(), seen.clone()));
    // Set before any other thread exists (the runtime above is single-threaded and idle).
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(name, format!("http://{proxy}"));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(name);
    }

    runtime.block_on(async {
        let env = TestEnv::new().await;
        let target = listener(200, target_hits.clone(), seen.clone()).await;
        let settings = "--webhook-signing-key proxy-test-signing-key-01 \
                        --job-types webhook.deliver --webhook-allow-private";
        let consumer = TestConsumer::spawn(&env, &flags(settings)).await;
        let job = json!({
            "id": Uuid::now_v7().to_string(),
            "type": "webhook.deliver",
            "payload": {"url": format!("http://{target}/hook"), "body": {"n": 1}},
            "created_at": OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339).unwrap(),
            "tenant": "proxy",
        });
        env.publish_job(
            "webhook.deliver",
            serde_json::to_vec(&job).unwrap(),
            "proxy-1",
        )
        .await;

        // Whichever listener the request reaches first.
        tokio::time::timeout(Duration::from_secs(60), seen.notified())
            .await
            .expect("the delivery reached neither the target nor the proxy within 60 s");
        assert_eq!(
            proxy_hits.load(Ordering::SeqCst),
            0,
            "the delivery went through HTTP_PROXY"
        );
        assert_eq!(target_hits.load(Ordering::SeqCst), 1);
        consumer.stop().await;
        env.cleanup().await;
    });
}
