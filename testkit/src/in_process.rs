//! A service (gateway or consumer) started inside the test process, and the readiness probe
//! every started service is waited on with.
use std::net::SocketAddr;
use std::time::Duration;

/// A service started inside the test process: where it listens, and how to stop it as
/// Kubernetes stops a pod (the shutdown signal, then time to drain).
pub struct InProcess {
    pub addr: SocketAddr,
    shutdown: codigo_common::shutdown::Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Runs `run` (an application's `run_until_stopped`) on a task of its own; the task
    /// panics, failing the test, if the service stops with an error.
    pub fn spawn<F, Fut, E>(name: &'static str, addr: SocketAddr, run: F) -> Self
    where
        F: FnOnce(codigo_common::shutdown::Shutdown) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let shutdown = codigo_common::shutdown::Shutdown::new();
        let running = run(shutdown.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = running.await {
                panic!("{name} failed: {error}");
            }
        });
        Self {
            addr,
            shutdown,
            task,
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&self) {
        wait_ready("the service", self.addr).await;
    }

    /// Signals shutdown and waits for the service to drain and stop (30 s at most).
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stops within its drain timeout")
            .expect("service task");
    }
}

/// Anything a test talks HTTP to: in-process services and started binaries alike.
pub trait Service {
    /// `http://<addr><path>`.
    fn url(&self, path: &str) -> String;
}

impl Service for InProcess {
    fn url(&self, path: &str) -> String {
        InProcess::url(self, path)
    }
}

/// Waits (30 s at most: on a loaded machine JetStream can take seconds to answer) until
/// `GET /readyz` at `addr` answers 200; panics naming `what` otherwise.
pub async fn wait_ready(what: &str, addr: SocketAddr) {
    for _ in 0..600 {
        if ready(addr).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} at {addr} never became ready");
}

/// Whether `GET /readyz` at `addr` answers 200 now (a raw request: no client to configure,
/// no proxy from the environment in the way).
pub async fn ready(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut status_line = [0u8; 12];
    stream.read_exact(&mut status_line).await.is_ok() && &status_line[9..12] == b"200"
}

/// The value of the first series of `name` on a Prometheus text page whose labels include
/// every `labels` pair.
pub fn metric_value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// `GET <url>` of a `/metrics` page, as text.
pub async fn scrape(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("the /metrics page")
}
