//! Load through the gateway, as a careful client submits it: every job carries an idempotency
//! key, and anything short of a `202` (a `503`, a timeout, an item `error`) is sent again with
//! the same key until it is accepted. Every accepted id is recorded with its amount.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

/// The tenant of the suite's API key.
pub const TENANT: &str = "chaos";

/// One `ledger.post` job the suite wants applied.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub key: String,
    pub account: String,
    pub amount: i64,
    pub memo: Option<String>,
}

impl JobSpec {
    pub fn id(&self) -> Uuid {
        codigo_schemas::job_id(TENANT, codigo_schemas::LEDGER_POST, Some(&self.key))
    }

    fn request(&self) -> Value {
        let mut payload =
            json!({"account": self.account, "amount_cents": self.amount, "currency": "EUR"});
        if let Some(memo) = &self.memo {
            payload["memo"] = json!(memo);
        }
        json!({"type": "ledger.post", "payload": payload, "idempotency_key": self.key})
    }
}

/// What the gateway answered, as the suite saw it.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Every job that got a `202` (queued), by id.
    pub accepted: HashMap<Uuid, JobSpec>,
    /// `202` items the gateway marked `duplicate: true` (a resubmission it recognised).
    pub duplicates: u64,
    /// Items or requests answered `503` or `error` and submitted again.
    pub resubmitted: u64,
    /// HTTP answers by status code (whole requests).
    pub statuses: BTreeMap<u16, u64>,
    /// `503` answers without a `Retry-After` header.
    pub missing_retry_after: u64,
    /// Item errors inside `202` batch answers (publish failed; nothing stored).
    pub item_errors: u64,
    /// Single-job `503` answers (the gateway counts these as `error` too).
    pub single_unavailable: u64,
    /// Requests that got no HTTP answer at all (connection refused, timeout).
    pub transport_errors: u64,
    /// Items the gateway rejected as invalid: a bug of the suite or the gateway.
    pub rejected: Vec<String>,
    /// A `202` whose id is not the one the idempotency key determines.
    pub wrong_ids: Vec<String>,
    /// Jobs still not accepted when the deadline passed.
    pub never_accepted: u64,
}

pub struct Load {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub ledger: Arc<Mutex<Ledger>>,
    /// Jobs accepted so far (new and duplicate answers alike), for the fault schedule.
    pub progress: Arc<AtomicU64>,
    /// Jobs applied so far (from Postgres) and the largest backlog of accepted but not yet
    /// applied jobs: submission keeps pace with the workers, so that faults hit both.
    pub applied: Arc<AtomicU64>,
    pub max_backlog: u64,
    /// Every accepted job's (first attempt, 202) instants: how long ingest stalled around a
    /// fault. Time spent waiting for the workers to catch up (backlog) is before the first
    /// attempt and so not counted.
    pub timeline: Arc<Mutex<Vec<(Instant, Instant)>>>,
}

impl Load {
    /// Submits `jobs` with `submitters` concurrent clients in batches of `batch` (every tenth
    /// chunk as single requests), each client pausing `pace` between chunks, until each job is
    /// accepted or `deadline` passes.
    pub async fn submit(
        self: &Arc<Self>,
        jobs: Vec<JobSpec>,
        submitters: usize,
        batch: usize,
        pace: Duration,
        deadline: Instant,
    ) {
        let queue: VecDeque<(usize, Vec<JobSpec>)> = jobs
            .chunks(batch.max(1))
            .map(<[JobSpec]>::to_vec)
            .enumerate()
            .collect();
        let queue = Arc::new(Mutex::new(queue));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..submitters.max(1) {
            let load = self.clone();
            let queue = queue.clone();
            tasks.spawn(async move {
                loop {
                    let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                    let Some((index, chunk)) = next else { break };
                    while Instant::now() < deadline
                        && load.progress.load(Ordering::Relaxed)
                            > load.applied.load(Ordering::Relaxed) + load.max_backlog
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if index % 10 == 9 {
                        for job in chunk {
                            load.submit_single(job, deadline).await;
                        }
                    } else {
                        load.submit_batch(chunk, deadline).await;
                    }
                    tokio::time::sleep(pace).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    fn note<F: FnOnce(&mut Ledger)>(&self, f: F) {
        if let Ok(mut ledger) = self.ledger.lock() {
            f(&mut ledger);
        }
    }

    fn accept(&self, job: JobSpec, id: Option<&str>, duplicate: bool, first_attempt: Instant) {
        self.progress.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut timeline) = self.timeline.lock() {
            timeline.push((first_attempt, Instant::now()));
        }
        self.note(|l| {
            let expected = job.id();
            if id != Some(expected.to_string().as_str()) {
                l.wrong_ids
                    .push(format!("key {}: expected {expected}, got {id:?}", job.key));
            }
            if duplicate {
                l.duplicates += 1;
            }
            l.accepted.insert(expected, job);
        });
    }

    /// Answers a `503` as a client should: wait as told (capped), then try again.
    async fn back_off(&self, response: &reqwest::Response) {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if retry_after.is_none() {
            self.note(|l| l.missing_retry_after += 1);
        }
        let wait = Duration::from_secs(retry_after.unwrap_or(1)).min(Duration::from_millis(1500));
        tokio::time::sleep(wait).await;
    }

    /// Whether another attempt for `left` jobs may start: not once the deadline has passed
    /// (they count as never accepted). Every attempt after the first is a resubmission.
    fn may_try(&self, attempts: &mut u32, left: u64, deadline: Instant) -> bool {
        if Instant::now() > deadline {
            self.note(|l| l.never_accepted += left);
            return false;
        }
        if *attempts > 0 {
            self.note(|l| l.resubmitted += 1);
        }
        *attempts += 1;
        true
    }

    /// Posts `body` to the gateway's `path` and counts the answer's status; `None`, after a
    /// short pause, when no answer came.
    async fn post(&self, path: &str, body: &Value) -> Option<(reqwest::Response, u16)> {
        let sent = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                self.note(|l| *l.statuses.entry(status).or_default() += 1);
                Some((response, status))
            }
            Err(_) => {
                self.note(|l| l.transport_errors += 1);
                tokio::time::sleep(Duration::from_millis(200)).await;
                None
            }
        }
    }

    async fn submit_batch(&self, mut chunk: Vec<JobSpec>, deadline: Instant) {
        let mut attempts = 0;
        let first_attempt = Instant::now();
        while !chunk.is_empty() {
            if !self.may_try(&mut attempts, chunk.len() as u64, deadline) {
                return;
            }
            let body = json!({"jobs": chunk.iter().map(JobSpec::request).collect::<Vec<_>>()});
            let Some((response, status)) = self.post("/v1/jobs/batch", &body).await else {
                continue;
            };
            if status == 503 {
                self.back_off(&response).await;
                continue;
            }
            if status != 202 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let Ok(answer) = response.json::<Value>().await else {
                self.note(|l| l.transport_errors += 1);
                continue;
            };
            let results = answer["results"].as_array().cloned().unwrap_or_default();
            let mut again = Vec::new();
            for (job, result) in chunk
                .into_iter()
                .zip(results.iter().chain(std::iter::repeat(&Value::Null)))
            {
                match result["status"].as_str() {
                    Some("queued") => self.accept(
                        job,
                        result["id"].as_str(),
                        result["duplicate"].as_bool().unwrap_or(false),
                        first_attempt,
                    ),
                    Some("rejected") => self.note(|l| {
                        l.rejected.push(format!("{}: {}", job.key, result["error"]));
                    }),
                    _ => {
                        self.note(|l| l.item_errors += 1);
                        again.push(job);
                    }
                }
            }
            if !again.is_empty() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            chunk = again;
        }
    }

    async fn submit_single(&self, job: JobSpec, deadline: Instant) {
        let mut attempts = 0;
        let first_attempt = Instant::now();
        loop {
            if !self.may_try(&mut attempts, 1, deadline) {
                return;
            }
            let Some((response, status)) = self.post("/v1/jobs", &job.request()).await else {
                continue;
            };
            match status {
                202 => {
                    let answer: Value = response.json().await.unwrap_or(Value::Null);
                    self.accept(
                        job,
                        answer["id"].as_str(),
                        answer["duplicate"].as_bool().unwrap_or(false),
                        first_attempt,
                    );
                    return;
                }
                503 => {
                    self.note(|l| l.single_unavailable += 1);
                    self.back_off(&response).await;
                }
                400..=499 => {
                    let text = response.text().await.unwrap_or_default();
                    self.note(|l| l.rejected.push(format!("{} ({status}): {text}", job.key)));
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// What a poison message should become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PoisonKind {
    /// Not JSON: dead-lettered with reason `decode`.
    Decode,
    /// An envelope that breaks the schema: `schema`.
    Schema,
    /// A valid job its handler refuses (`chaos:permanent`): `permanent`.
    Permanent,
    /// A job that kills its worker every time (`chaos:crash`): `max_deliveries`.
    Crash,
}

impl PoisonKind {
    pub fn reason(self) -> &'static str {
        match self {
            PoisonKind::Decode => "decode",
            PoisonKind::Schema => "schema",
            PoisonKind::Permanent => "permanent",
            PoisonKind::Crash => "max_deliveries",
        }
    }
}

/// A poison message published straight to JetStream; identified in the dead-letter stream
/// by its body, which dead letters keep unchanged.
#[derive(Debug, Clone)]
pub struct Poison {
    pub kind: PoisonKind,
    pub body: Bytes,
    pub id: Option<Uuid>,
}

pub fn poison(kind: PoisonKind, n: usize) -> Poison {
    let id = Uuid::now_v7();
    let created_at = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let envelope = |payload: Value| {
        json!({"id": id.to_string(), "type": "ledger.post", "payload": payload,
               "created_at": created_at, "tenant": TENANT})
    };
    let (body, id) = match kind {
        PoisonKind::Decode => (format!("{{\"poison\": {n}, not json").into_bytes(), None),
        PoisonKind::Schema => {
            let payload = if n & 1 == 0 {
                json!({"account": format!("poison-{n}"), "amount_cents": 0, "currency": "EUR"})
            } else {
                json!({"account": format!("poison-{n}"), "amount_cents": 5, "currency": "eur"})
            };
            (
                serde_json::to_vec(&envelope(payload)).unwrap_or_default(),
                Some(id),
            )
        }
        PoisonKind::Permanent | PoisonKind::Crash => {
            let memo = if kind == PoisonKind::Permanent {
                "chaos:permanent"
            } else {
                "chaos:crash"
            };
            let payload = json!({"account": format!("poison-{n}"), "amount_cents": 1,
                                 "currency": "EUR", "memo": memo});
            (
                serde_json::to_vec(&envelope(payload)).unwrap_or_default(),
                Some(id),
            )
        }
    };
    Poison {
        kind,
        body: Bytes::from(body),
        id,
    }
}

/// Publishes a poison message straight to the work stream, retrying (same message id) until
/// JetStream acknowledges it or `deadline` passes.
pub async fn publish_poison(
    js: &async_nats::jetstream::Context,
    subject: &str,
    poison: &Poison,
    msg_id: &str,
    deadline: Instant,
) -> bool {
    while Instant::now() < deadline {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(poison.body.clone())
            .message_id(msg_id);
        if let Ok(ack) = js.send_publish(subject.to_owned(), message).await {
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), ack).await {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}
