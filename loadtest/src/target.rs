//! Where jobs go in: one job per `POST /v1/jobs`, many per `POST /v1/jobs/batch`, or one
//! JetStream publish per job, acknowledged by the stream.
use std::time::Duration;

use async_nats::jetstream;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::LoadError;
use crate::http1::Http1Client;
use crate::payload::JobFactory;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ingest {
    /// `POST /v1/jobs`, one job per request.
    Single,
    /// `POST /v1/jobs/batch`, `--batch-size` jobs per request.
    Batch,
    /// Straight to JetStream with the producer's envelope and headers.
    Nats,
}

impl Ingest {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Single => "POST /v1/jobs",
            Self::Batch => "POST /v1/jobs/batch",
            Self::Nats => "JetStream publish",
        }
    }
}

/// What became of one request (one job, or one batch of jobs).
#[derive(Debug, Default)]
pub struct Sent {
    /// Jobs in the request.
    pub jobs: u64,
    /// Ids of the jobs stored by JetStream.
    pub accepted: Vec<Uuid>,
    /// Jobs refused or lost, with why (`http 429`, `item rejected`, `transport`, ...).
    pub rejected: Vec<(String, u64)>,
}

impl Sent {
    fn refused(jobs: u64, why: String) -> Self {
        Self {
            jobs,
            accepted: Vec::new(),
            rejected: vec![(why, jobs)],
        }
    }
}

pub enum Target {
    Http {
        /// For plain `http://` producers; `client` serves `https://` ones.
        plain: Option<Http1Client>,
        client: reqwest::Client,
        url: String,
        token: Option<String>,
        batch: bool,
    },
    Nats {
        js: jetstream::Context,
        subject: String,
    },
}

#[derive(Deserialize)]
struct Accepted {
    id: Uuid,
}

#[derive(Deserialize)]
struct BatchItem {
    status: String,
    id: Option<Uuid>,
}

#[derive(Deserialize)]
struct BatchAccepted {
    results: Vec<BatchItem>,
}

/// Requests answer within this, or count as rejected (`timeout`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Target {
    /// An HTTP target at the producer's base URL (`http://host:port`).
    pub fn http(base_url: &str, token: Option<String>, batch: bool) -> Result<Self, LoadError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .build()
            .map_err(LoadError::Http)?;
        let path = if batch { "/v1/jobs/batch" } else { "/v1/jobs" };
        let url = format!("{}{path}", base_url.trim_end_matches('/'));
        Ok(Self::Http {
            plain: Http1Client::new(&url, token.as_deref(), REQUEST_TIMEOUT)?,
            client,
            url,
            token,
            batch,
        })
    }

    /// A JetStream target: every publish waits for the stream's acknowledgement, and up to
    /// `max_in_flight` publishes may wait at once.
    pub fn nats(client: async_nats::Client, subject: String, max_in_flight: usize) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .max_ack_inflight(max_in_flight.max(1))
            .backpressure_on_inflight(true)
            .build(client);
        Self::Nats { js, subject }
    }

    /// Sends jobs `first..first + count` as one request.
    pub async fn send(&self, factory: &JobFactory, first: u64, count: u64) -> Sent {
        match self {
            Self::Http {
                plain,
                client,
                url,
                token,
                batch,
            } => {
                let body = if *batch {
                    factory.batch_body(first, count)
                } else {
                    factory.request_body(first)
                };
                let answer = match plain {
                    Some(plain) => plain
                        .post_json(body)
                        .await
                        .map_err(|f| f.as_str().to_owned()),
                    None => https_post(client, url, token.as_deref(), body).await,
                };
                let (status, bytes) = match answer {
                    Ok(answer) => answer,
                    Err(why) => return Sent::refused(count, why),
                };
                if status != hyper::StatusCode::ACCEPTED {
                    return Sent::refused(count, format!("http {}", status.as_u16()));
                }
                if *batch {
                    batch_outcome(count, &bytes)
                } else {
                    match serde_json::from_slice::<Accepted>(&bytes) {
                        Ok(accepted) => Sent {
                            jobs: count,
                            accepted: vec![accepted.id],
                            rejected: Vec::new(),
                        },
                        Err(_) => Sent::refused(count, "unreadable 202 answer".into()),
                    }
                }
            }
            Self::Nats { js, subject } => {
                let (id, message) = factory.message(first);
                let stored = match js.send_publish(subject.clone(), message).await {
                    Ok(ack) => ack.await.map(drop).map_err(|e| e.kind().to_string()),
                    Err(error) => Err(error.kind().to_string()),
                };
                match stored {
                    Ok(()) => Sent {
                        jobs: 1,
                        accepted: vec![id],
                        rejected: Vec::new(),
                    },
                    Err(kind) => Sent::refused(1, format!("publish {kind}")),
                }
            }
        }
    }
}

async fn https_post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Result<(hyper::StatusCode, bytes::Bytes), String> {
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| transport(&e))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| transport(&e))?;
    Ok((status, bytes))
}

fn transport(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// Per-item outcomes of a batch answer; items the answer does not mention count as rejected.
fn batch_outcome(count: u64, bytes: &[u8]) -> Sent {
    let Ok(answer) = serde_json::from_slice::<BatchAccepted>(bytes) else {
        return Sent::refused(count, "unreadable 202 answer".into());
    };
    let mut sent = Sent {
        jobs: count,
        ..Sent::default()
    };
    let mut rejected = std::collections::BTreeMap::<String, u64>::new();
    for item in &answer.results {
        match (item.status.as_str(), item.id) {
            ("queued", Some(id)) => sent.accepted.push(id),
            (status, _) => *rejected.entry(format!("item {status}")).or_default() += 1,
        }
    }
    let answered = u64::try_from(answer.results.len()).unwrap_or(u64::MAX);
    if answered < count {
        *rejected.entry("item missing".into()).or_default() += count - answered;
    }
    sent.rejected = rejected.into_iter().collect();
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_count_every_item() {
        let id = Uuid::now_v7();
        let body = serde_json::json!({"results": [
            {"index": 0, "status": "queued", "id": id, "type": "ledger.post", "duplicate": false},
            {"index": 1, "status": "rejected", "error": {}},
        ]});
        let sent = batch_outcome(3, &serde_json::to_vec(&body).expect("json"));
        assert_eq!(sent.accepted, vec![id]);
        assert_eq!(
            sent.rejected,
            vec![
                ("item missing".to_owned(), 1),
                ("item rejected".to_owned(), 1)
            ]
        );
        let garbage = batch_outcome(2, b"nope");
        assert_eq!(garbage.rejected.iter().map(|r| r.1).sum::<u64>(), 2);
    }
}
