//! Jobs and streams of a `TestEnv`: envelopes published straight to JetStream as an upstream
//! system may, what the streams and the jobs table hold, and waiting for them to change.
use std::time::Duration;

use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use bytes::Bytes;
use serde_json::Value;
use uuid::Uuid;

use crate::TestEnv;

/// A ledger.post payload: `amount_cents` in EUR to `account`.
pub fn ledger_payload(account: &str, amount_cents: i64) -> Value {
    serde_json::json!({"account": account, "amount_cents": amount_cents, "currency": "EUR"})
}

/// A ledger.post job of 1 EUR to `account`, as `POST /v1/jobs` takes it.
pub fn ledger_job(account: &str) -> Value {
    serde_json::json!({"type": "ledger.post", "payload": ledger_payload(account, 100)})
}

/// The job id in a gateway answer or an envelope.
pub fn id_of(value: &Value) -> Uuid {
    Uuid::parse_str(value["id"].as_str().expect("an id")).expect("a UUID")
}

/// A job envelope of `job_type` created now.
pub fn envelope(id: Uuid, job_type: &str, tenant: &str, payload: Value) -> Value {
    serde_json::json!({
        "id": id.to_string(),
        "type": job_type,
        "payload": payload,
        "created_at": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format"),
        "tenant": tenant,
    })
}

/// The value of header `name` on a stored message, empty when absent.
pub fn header<'a>(message: &'a StreamMessage, name: &str) -> &'a str {
    message
        .headers
        .get(name)
        .map(|value| value.as_str())
        .unwrap_or_default()
}

/// Every message of `stream`, as (subject, JSON envelope), in order.
pub async fn stored_envelopes(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(String, Value)> {
    let mut stream = js.get_stream(stream).await.expect("stream");
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

impl TestEnv {
    /// Publishes `body` to `job_type`'s subject with `msg_id` as its Nats-Msg-Id, and waits
    /// until the stream stored it.
    pub async fn publish_job(&self, job_type: &str, body: impl Into<Bytes>, msg_id: &str) {
        self.js
            .send_publish(
                self.names.job_subject(job_type),
                PublishMessage::build()
                    .payload(body.into())
                    .message_id(msg_id),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    /// Publishes `envelope` to its type's subject, its id as Nats-Msg-Id.
    pub async fn publish_envelope(&self, envelope: &Value) {
        let job_type = envelope["type"].as_str().expect("envelope type");
        let id = envelope["id"].as_str().expect("envelope id");
        self.publish_job(job_type, envelope.to_string(), id).await;
    }

    /// Publishes `count` ledger.post jobs of 1 cent to `account` straight to the work stream,
    /// each stored before the next; returns their ids.
    pub async fn publish_ledger_jobs(&self, account: &str, count: usize) -> Vec<Uuid> {
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let id = Uuid::now_v7();
            self.publish_envelope(&envelope(
                id,
                "ledger.post",
                "test",
                ledger_payload(account, 1),
            ))
            .await;
            ids.push(id);
        }
        ids
    }

    /// `codigo-ctl status --format json`'s row of `job_type`.
    pub async fn ctl_status_of(&self, job_type: &str) -> Value {
        let status: Value =
            serde_json::from_str(&self.ctl_ok(&["status", "--format", "json"]).await)
                .expect("codigo-ctl status prints JSON");
        status
            .as_array()
            .expect("a row per job type")
            .iter()
            .find(|row| row["job_type"] == job_type)
            .cloned()
            .unwrap_or_else(|| panic!("{job_type} is listed: {status}"))
    }

    /// How many messages `stream` holds now.
    pub async fn messages_in(&self, stream: &str) -> u64 {
        let mut stream = self.js.get_stream(stream).await.expect("stream");
        stream.info().await.expect("stream info").state.messages
    }

    /// How many dead letters the namespace holds now.
    pub async fn dead_letter_count(&self) -> u64 {
        self.messages_in(&self.names.dlq_stream()).await
    }

    /// How many jobs wait on the work stream now.
    pub async fn work_stream_count(&self) -> u64 {
        self.messages_in(&self.names.jobs_stream()).await
    }

    /// Every job on the work stream, as (subject, envelope), in order.
    pub async fn stored_jobs(&self) -> Vec<(String, Value)> {
        stored_envelopes(&self.js, &self.names.jobs_stream()).await
    }

    /// Waits (60 s at most) for `expected` dead letters and returns them; fails if there are
    /// more.
    pub async fn dead_letters(&self, expected: usize) -> Vec<StreamMessage> {
        self.eventually(
            &format!("{expected} dead letters"),
            Duration::from_secs(60),
            || async { self.dead_letter_count().await >= expected as u64 },
        )
        .await;
        let stream = self
            .js
            .get_stream(self.names.dlq_stream())
            .await
            .expect("dlq stream");
        let mut found = Vec::new();
        for seq in 1..=(expected as u64 + 5) {
            if let Ok(message) = stream.get_raw_message(seq).await {
                found.push(message);
            }
        }
        assert_eq!(found.len(), expected, "no extra dead letters");
        found
    }

    /// The single number `sql` selects.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("query")
    }

    /// Waits (60 s at most) until `sql` counts `expected`.
    pub async fn wait_for_count(&self, what: &str, sql: &str, expected: i64) {
        let timeout = Duration::from_secs(60);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.count(sql).await;
            if found == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: expected {expected}, found {found} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Gives `account` of `tenant` a balance row before any job does: one for the test to
    /// lock, or one at the edge of what Postgres can add to.
    pub async fn insert_balance(&self, tenant: &str, account: &str, currency: &str, cents: i64) {
        sqlx::query(
            "INSERT INTO account_balances (tenant, account, currency, balance_cents)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant)
        .bind(account)
        .bind(currency)
        .bind(cents)
        .execute(&self.pool)
        .await
        .expect("insert the balance row");
    }

    /// How many ledger entries `account` has; -1 while the database cannot be read (tests
    /// poll through outages they cause).
    pub async fn ledger_entries(&self, account: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE account = $1")
            .bind(account)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(-1)
    }

    /// A connection of its own to the test database (outside the pool).
    pub async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }

    /// A `running` ledger.post row for job `id`, locked by a transaction left open on the
    /// returned connection: the consumer's writes of that row wait until the test sends
    /// ROLLBACK on it.
    pub async fn lock_job_row(&self, id: Uuid) -> sqlx::PgConnection {
        use sqlx::Executor;
        sqlx::query(
            "INSERT INTO jobs (id, type, status, attempts, created_at)
             VALUES ($1, 'ledger.post', 'running', 0, now())",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .expect("insert the job row");
        let mut locker = self.connect().await;
        locker.execute("BEGIN").await.expect("begin");
        sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut locker)
            .await
            .expect("lock the job row");
        locker
    }

    /// The attempts the jobs table records for `ids`.
    pub async fn job_attempts(&self, ids: &[Uuid]) -> Vec<i32> {
        sqlx::query_scalar("SELECT attempts FROM jobs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .expect("jobs rows")
    }

    /// The status of job `id` in the jobs table, if it has a row.
    pub async fn job_status(&self, id: Uuid) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten()
    }

    /// Waits (60 s at most) until job `id` has `status`.
    pub async fn wait_job_status(&self, id: Uuid, status: &str) {
        self.eventually(
            &format!("job {id} {status}"),
            Duration::from_secs(60),
            || async { self.job_status(id).await.as_deref() == Some(status) },
        )
        .await;
    }
}
