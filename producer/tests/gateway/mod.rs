//! The gateway started in-process on port 0 against real NATS and Postgres, for the security
//! and CloudEvents tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use clap::Parser;
use codigo_producer::{Application, Config};
use codigo_testkit::{InProcess, TestEnv};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Tenant `alpha`, every job type.
pub const ALPHA: &str = "alpha-token-0000000001";
/// Key `beta`, tenant `acme`.
pub const BETA: &str = "beta-token-00000000002";
/// Key `gamma`, also tenant `acme`: a second key of the same tenant.
pub const GAMMA: &str = "gamma-token-0000000003";
/// Key `scoped`, tenant `scoped`, webhook.deliver only.
pub const SCOPED: &str = "scoped-token-000000004";

pub fn api_keys() -> String {
    format!(
        "alpha:{ALPHA},beta:{BETA};tenant=acme,gamma:{GAMMA};tenant=acme,scoped:{SCOPED};types=webhook.deliver"
    )
}

pub struct Gateway {
    pub addr: SocketAddr,
    service: InProcess,
    pub http: reqwest::Client,
}

impl Gateway {
    pub async fn start(env: &TestEnv, extra: &[&str]) -> Self {
        let keys = api_keys();
        let mut args = env.service_args(
            "codigo-producer",
            &[
                "--api-keys",
                &keys,
                "--rate-limit-per-key",
                "0",
                "--publish-timeout-secs",
                "2",
            ],
        );
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let config = Config::try_parse_from(args).expect("valid flags");
        let app = Application::build(config).await.expect("gateway starts");
        let addr = app.local_addr();
        let service = InProcess::spawn("gateway", addr, |stop| app.run_until_stopped(stop));
        let gateway = Self {
            addr,
            service,
            http: reqwest::Client::new(),
        };
        gateway.wait_ready().await;
        gateway
    }

    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }

    async fn wait_ready(&self) {
        self.service.wait_ready().await;
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        read(
            self.http
                .post(self.url(path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// A POST with a raw body and the given headers (content type included).
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self.http.post(self.url(path)).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        read(
            self.http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    pub async fn stop(self) {
        self.service.stop().await;
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Asserts a problem+json answer of the given status and problem type.
    pub fn assert_problem(&self, status: StatusCode, slug: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(
            self.body["type"],
            format!("https://codigo.dev/problems/{slug}"),
            "{}",
            self.text
        );
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            self.text
        );
    }
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

pub fn ledger_payload(account: &str, amount: i64) -> Value {
    json!({"account": account, "amount_cents": amount, "currency": "EUR"})
}

pub fn ledger(account: &str, amount: i64) -> Value {
    json!({"type": "ledger.post", "payload": ledger_payload(account, amount)})
}

/// Every message on the work stream, as (subject, envelope), in order.
pub async fn stored(env: &TestEnv) -> Vec<(String, Value)> {
    let mut stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            let envelope = serde_json::from_slice(&message.payload).expect("JSON envelope");
            out.push((message.subject.to_string(), envelope));
        }
    }
    out
}
