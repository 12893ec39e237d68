//! The jobs a load run sends: `ledger.post` over a fixed set of accounts, padded with a memo
//! to a chosen size, as an HTTP body or as the very envelope and headers the producer
//! publishes.
use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use bytes::Bytes;
use codigo_common::contract::headers as codigo_headers;
use codigo_schemas::{Envelope, LedgerPost, LEDGER_POST};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

/// Longest memo the `ledger.post` schema allows.
const MAX_MEMO: usize = 256;

/// Builds job number `n` of a run; every job of a run has the same size.
#[derive(Debug, Clone)]
pub struct JobFactory {
    accounts: u64,
    memo: String,
    tenant: String,
}

/// Sizes of one job, as reported in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JobSize {
    /// The JSON envelope on the work stream.
    pub envelope_bytes: usize,
    /// Envelope plus NATS headers: what JetStream stores per job.
    pub message_bytes: usize,
}

impl JobFactory {
    /// Jobs spread over `accounts` accounts whose stored message (envelope and headers) is
    /// about `job_bytes` long; the memo cannot exceed the schema's 256 characters, so very
    /// large sizes are capped.
    pub fn new(accounts: u64, job_bytes: usize, tenant: &str) -> Self {
        let mut factory = Self {
            accounts: accounts.max(1),
            memo: String::new(),
            tenant: tenant.to_owned(),
        };
        let bare = factory.size().message_bytes;
        let memo_len = job_bytes.saturating_sub(bare).min(MAX_MEMO);
        // A readable, compressible-but-not-constant filler.
        factory.memo = "codigo load test padding "
            .chars()
            .cycle()
            .take(memo_len)
            .collect();
        factory
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    fn payload(&self, n: u64) -> LedgerPost {
        LedgerPost {
            account: format!("acct-{:06}", n % self.accounts),
            // Never zero (the schema refuses it); alternating signs keep balances small.
            amount_cents: (i64::try_from(n % 9_999).unwrap_or(0) + 1)
                * if n & 1 == 0 { 1 } else { -1 },
            currency: "EUR".to_owned(),
            memo: Some(self.memo.clone()),
        }
    }

    /// The body of `POST /v1/jobs` for job `n`.
    pub fn request(&self, n: u64) -> serde_json::Value {
        json!({"type": LEDGER_POST, "payload": self.payload(n)})
    }

    pub fn request_body(&self, n: u64) -> Vec<u8> {
        serde_json::to_vec(&self.request(n)).unwrap_or_default()
    }

    /// The body of `POST /v1/jobs/batch` for jobs `first..first + count`.
    pub fn batch_body(&self, first: u64, count: u64) -> Vec<u8> {
        let jobs: Vec<serde_json::Value> =
            (first..first + count).map(|n| self.request(n)).collect();
        serde_json::to_vec(&json!({ "jobs": jobs })).unwrap_or_default()
    }

    /// Job `n` as the producer would publish it: same envelope, same headers.
    pub fn message(&self, n: u64) -> (Uuid, PublishMessage) {
        let (id, body, headers) = self.envelope(n);
        let message = PublishMessage::build()
            .payload(Bytes::from(body))
            .headers(headers);
        (id, message)
    }

    /// Job `n`'s id, envelope body and headers, exactly as the producer builds them.
    pub fn envelope(&self, n: u64) -> (Uuid, Vec<u8>, HeaderMap) {
        let id = codigo_schemas::job_id(&self.tenant, LEDGER_POST, None);
        let envelope = Envelope {
            id,
            job_type: LEDGER_POST.to_owned(),
            payload: serde_json::to_value(self.payload(n)).unwrap_or_default(),
            idempotency_key: None,
            created_at: OffsetDateTime::now_utc(),
            tenant: Some(self.tenant.clone()),
            run_at: None,
            expires_at: None,
            callback_url: None,
        };
        let body = serde_json::to_vec(&envelope).unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.to_string().as_str());
        headers.insert(codigo_headers::JOB_TYPE, LEDGER_POST);
        headers.insert("Content-Type", "application/json");
        headers.insert("traceparent", traceparent().as_str());
        (id, body, headers)
    }

    /// Size of one job; job numbers and timestamps vary by a few bytes at most.
    pub fn size(&self) -> JobSize {
        let (_, body, headers) = self.envelope(123_456);
        // NATS/1.0 status line, one line per header, blank line.
        let header_bytes = 10
            + headers
                .iter()
                .map(|(name, values)| {
                    values
                        .iter()
                        .map(|v| AsRef::<str>::as_ref(name).len() + 2 + v.as_str().len() + 2)
                        .sum::<usize>()
                })
                .sum::<usize>()
            + 2;
        JobSize {
            envelope_bytes: body.len(),
            message_bytes: body.len() + header_bytes,
        }
    }
}

/// A W3C trace context of a fresh, sampled trace, as the producer writes on every message.
fn traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_padded_to_the_requested_size() {
        let factory = JobFactory::new(10, 512, "loadtest");
        let size = factory.size();
        assert!(
            (500..=520).contains(&size.message_bytes),
            "{size:?} should be about 512 bytes"
        );
        assert!(size.envelope_bytes < size.message_bytes);
        // Too small a size keeps an empty memo; too large one stops at the schema's limit.
        assert!(JobFactory::new(10, 10, "t").memo.is_empty());
        assert_eq!(JobFactory::new(10, 100_000, "t").memo.len(), MAX_MEMO);
    }

    #[test]
    fn jobs_are_valid_ledger_posts_over_the_accounts() {
        let factory = JobFactory::new(3, 512, "loadtest");
        let job_type = codigo_schemas::registry()
            .job_type(LEDGER_POST)
            .expect("registered");
        let mut accounts = std::collections::BTreeSet::new();
        for n in 0..10 {
            let request = factory.request(n);
            job_type
                .validate(&request["payload"])
                .expect("payload matches the schema");
            accounts.insert(
                request["payload"]["account"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        assert_eq!(accounts.len(), 3);
        let (id, body, headers) = factory.envelope(7);
        let envelope: serde_json::Value = serde_json::from_slice(&body).expect("envelope is JSON");
        codigo_schemas::registry()
            .validate_envelope(&envelope)
            .expect("envelope matches the schema");
        assert_eq!(envelope["id"], id.to_string());
        assert_eq!(
            headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()),
            Some(id.to_string())
        );
        assert!(headers.get("traceparent").is_some());
        let batch: serde_json::Value =
            serde_json::from_slice(&factory.batch_body(0, 4)).expect("batch is JSON");
        assert_eq!(batch["jobs"].as_array().map(Vec::len), Some(4));
    }
}
