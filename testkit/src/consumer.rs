//! The consumer started in-process against a `TestEnv`.
use std::net::SocketAddr;

use clap::Parser;
use codigo_consumer::{Application, Config};

use crate::{InProcess, TestEnv};

/// Retries within a test: 50 ms to 1 s apart, four deliveries, acks waited for 5 s,
/// redeliveries after 1 s.
pub const SHORT_RETRIES: &str =
    "--retry-base-ms 50 --retry-max-secs 1 --max-deliver 4 --ack-wait-secs 5 --backoff-secs 1";

pub struct TestConsumer {
    pub addr: SocketAddr,
    service: InProcess,
}

impl TestConsumer {
    /// The consumer's settings for `env`: pulls that end within a second and a 5 s drain, so
    /// that a test stops quickly, then `extra` (a later flag wins over an earlier one).
    pub fn config(env: &TestEnv, extra: &[&str]) -> Config {
        let mut args = env.service_args(
            "codigo-consumer",
            &["--fetch-expires-ms", "1000", "--shutdown-timeout-secs", "5"],
        );
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        Config::try_parse_from(args).expect("valid consumer flags")
    }

    /// Starts the consumer with [`config`](Self::config).
    pub async fn spawn(env: &TestEnv, extra: &[&str]) -> Self {
        Self::from_config(Self::config(env, extra), |app| app).await
    }

    /// Starts the consumer with [`config`](Self::config), `customize` applied to the built
    /// application first (a test's own handlers).
    pub async fn spawn_with(
        env: &TestEnv,
        extra: &[&str],
        customize: impl FnOnce(Application) -> Application,
    ) -> Self {
        Self::from_config(Self::config(env, extra), customize).await
    }

    pub async fn from_config(
        config: Config,
        customize: impl FnOnce(Application) -> Application,
    ) -> Self {
        let app = customize(Application::build(config).await.expect("consumer starts"));
        let addr = app.local_addr();
        let service = InProcess::spawn("consumer", addr, |stop| app.run_until_stopped(stop));
        Self { addr, service }
    }

    /// Started with exactly `flags` (and the defaults of `codigo-consumer`), for tests that
    /// set up NATS and Postgres access themselves.
    pub async fn from_flags(flags: &[&str]) -> Self {
        let config =
            Config::try_parse_from(std::iter::once("codigo-consumer").chain(flags.iter().copied()))
                .expect("valid consumer flags");
        Self::from_config(config, |app| app).await
    }

    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }

    pub async fn wait_ready(&self) {
        self.service.wait_ready().await;
    }

    /// The consumer's `/metrics` page.
    pub async fn metrics(&self) -> String {
        crate::in_process::scrape(&self.url("/metrics")).await
    }

    pub async fn stop(self) {
        self.service.stop().await;
    }
}

impl crate::Service for TestConsumer {
    fn url(&self, path: &str) -> String {
        TestConsumer::url(self, path)
    }
}
