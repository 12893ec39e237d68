//! The gateway started in-process on a free port against a `TestEnv`.
use std::net::SocketAddr;

use clap::Parser;
use codigo_producer::{Application, Config};
use serde_json::Value;

use crate::http::{read, Reply};
use crate::{InProcess, TestEnv};

pub struct TestProducer {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    service: InProcess,
}

impl TestProducer {
    /// The gateway's settings for `env`: the test keys of [`crate::http::api_keys`], no rate
    /// limit, then `extra` (a later flag wins over an earlier one).
    pub fn config(env: &TestEnv, extra: &[&str]) -> Config {
        let keys = crate::http::api_keys();
        let mut args = env.service_args(
            "codigo-producer",
            &["--api-keys", &keys, "--rate-limit-per-key", "0"],
        );
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        Config::try_parse_from(args).expect("valid producer flags")
    }

    /// Starts the gateway with [`config`](Self::config) and waits until it is ready.
    pub async fn start(env: &TestEnv, extra: &[&str]) -> Self {
        let producer = Self::spawn(env, extra).await;
        producer.wait_ready().await;
        producer
    }

    /// Starts the gateway with [`config`](Self::config), not waiting for readiness.
    pub async fn spawn(env: &TestEnv, extra: &[&str]) -> Self {
        Self::from_config(Self::config(env, extra)).await
    }

    pub async fn from_config(config: Config) -> Self {
        let app = Application::build(config).await.expect("gateway starts");
        let addr = app.local_addr();
        let service = InProcess::spawn("gateway", addr, |stop| app.run_until_stopped(stop));
        Self {
            addr,
            http: reqwest::Client::new(),
            service,
        }
    }

    /// Started with exactly `flags` (and the defaults of `codigo-producer`), for tests that
    /// set up NATS and Postgres access themselves.
    pub async fn from_flags(flags: &[&str]) -> Self {
        let config =
            Config::try_parse_from(std::iter::once("codigo-producer").chain(flags.iter().copied()))
                .expect("valid producer flags");
        Self::from_config(config).await
    }

    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }

    pub async fn wait_ready(&self) {
        self.service.wait_ready().await;
    }

    pub async fn stop(self) {
        self.service.stop().await;
    }

    /// POST of `body` as JSON with `token` as bearer.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.post_raw(
            path,
            Some(token),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// Submits `job` with `token`, asserts it was accepted and returns its id.
    pub async fn submit(&self, token: &str, job: Value) -> uuid::Uuid {
        let reply = self.post("/v1/jobs", token, job).await;
        reply.assert_status(reqwest::StatusCode::ACCEPTED);
        crate::id_of(&reply.body)
    }

    /// POST of one structured-mode CloudEvent to `/v1/events` with `token` as bearer.
    pub async fn post_event(&self, token: &str, event: Value) -> Reply {
        self.post_raw(
            "/v1/events",
            Some(token),
            &[("content-type", "application/cloudevents+json")],
            event.to_string(),
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

    /// PUT of `body` as JSON with `token` as bearer.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        read(
            self.http
                .put(self.url(path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        read(
            self.http
                .delete(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .expect("request"),
        )
        .await
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
}

impl crate::Service for TestProducer {
    fn url(&self, path: &str) -> String {
        TestProducer::url(self, path)
    }
}
