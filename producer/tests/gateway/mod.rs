//! The gateway started in-process on a free port against real NATS and Postgres, for the
//! security and CloudEvents tests.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;

pub use codigo_testkit::http::{read, Reply, ALPHA, BETA, GAMMA, SCOPED};
pub use codigo_testkit::NatsServer as PrivateNats;
use codigo_testkit::{TestEnv, TestProducer};
use serde_json::{json, Value};

/// The test keys, no rate limit and a 2 s publish timeout.
pub struct Gateway(TestProducer);

impl Gateway {
    pub async fn start(env: &TestEnv, extra: &[&str]) -> Self {
        let args = [&["--publish-timeout-secs", "2"], extra].concat();
        Self(TestProducer::start(env, &args).await)
    }

    pub async fn stop(self) {
        self.0.stop().await;
    }

    /// Stops the gateway, then removes `env`: the gateway never sees its streams vanish.
    pub async fn stop_and_clean_up(self, env: TestEnv) {
        self.stop().await;
        env.cleanup().await;
    }

    /// POST /v1/events as [`ALPHA`]; `headers` give the mode (the content type, or the
    /// binary mode's `ce-` headers).
    pub async fn post_event(
        &self,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        self.post_raw("/v1/events", Some(ALPHA), headers, body)
            .await
    }
}

impl std::ops::Deref for Gateway {
    type Target = TestProducer;

    fn deref(&self) -> &TestProducer {
        &self.0
    }
}

pub use codigo_testkit::ledger_payload;

pub fn ledger(account: &str, amount: i64) -> Value {
    json!({"type": "ledger.post", "payload": ledger_payload(account, amount)})
}

/// A ledger job carrying `key` as its idempotency key.
pub fn keyed_ledger(account: &str, amount: i64, key: &str) -> Value {
    let mut job = ledger(account, amount);
    job["idempotency_key"] = json!(key);
    job
}

/// Every message on the work stream, as (subject, envelope), in order.
pub async fn stored(env: &TestEnv) -> Vec<(String, Value)> {
    env.stored_jobs().await
}

/// Every message of `stream` on the server at `url`, as envelopes, in order.
pub async fn stored_at(url: &str, stream: &str) -> Vec<Value> {
    let client = async_nats::connect(url).await.expect("private NATS");
    let js = async_nats::jetstream::new(client);
    codigo_testkit::stored_envelopes(&js, stream)
        .await
        .into_iter()
        .map(|(_, envelope)| envelope)
        .collect()
}

/// A request written by hand on a real socket: `head` is sent at once (request line and
/// headers, without the blank line's end), the body not at all. Returns the open socket.
pub async fn raw_request(addr: SocketAddr, head: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .expect("write head");
    socket
}

/// Reads a response's status code and text from a raw socket (until the peer closes it or a
/// whole problem+json body is in), within `limit`.
pub async fn raw_status(
    socket: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            let text = String::from_utf8_lossy(&received);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("no response within {limit:?}"));
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    (status, text)
}
