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

/// A private nats-server of the pinned release with JetStream, on a port and store of its
/// own, for tests that pause, kill or limit the server; killed and removed on drop.
pub struct PrivateNats {
    child: Option<std::process::Child>,
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivateNats {
    /// `config` is nats-server configuration text added to the listen and JetStream settings.
    pub fn start(config: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir =
            std::env::temp_dir().join(format!("codigo-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let conf = format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n{config}\n",
            dir.join("js")
        );
        std::fs::write(dir.join("server.conf"), conf).expect("write server.conf");
        let mut server = Self {
            child: None,
            dir,
            port,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new(codigo_testkit::nats_server_binary())
            .arg("-c")
            .arg(self.dir.join("server.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server runs (make test-tools installs the pinned release)");
        self.child = Some(child);
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("private nats-server did not start on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL (whatever it had not read from its sockets is lost), then the same server
    /// again on its port and store.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every message of `stream` on the server at `url`, as envelopes, in order.
pub async fn stored_at(url: &str, stream: &str) -> Vec<Value> {
    let client = async_nats::connect(url).await.expect("private NATS");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            out.push(serde_json::from_slice(&message.payload).expect("JSON envelope"));
        }
    }
    out
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
