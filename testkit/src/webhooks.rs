//! Webhook deliveries checked as a receiver checks them: with the official Standard Webhooks
//! library (`scripts/verify-webhook.sh`, which installs it once into `.local/venvs`).
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Whether the official Standard Webhooks library accepts the delivery with `secret`. Panics
/// when the verifier cannot run at all (no python3, no venv, pip failing): never a silent skip.
pub async fn verifies(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/verify-webhook.sh");
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                json!(value.to_str().expect("ascii header")),
            )
        })
        .collect();
    let input = json!({
        "headers": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(body),
    });
    let mut child = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.to_string().as_bytes())
        .await
        .expect("write to the verifier");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .expect("the verifier (and its one-time pip install) finishes within 10 minutes")
        .expect("verifier output");
    match output.status.code() {
        Some(0) => true,
        Some(10) => false,
        _ => panic!(
            "the Standard Webhooks verifier could not run ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}
