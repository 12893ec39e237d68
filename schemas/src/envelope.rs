use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// The message body on the work stream (`schemas/envelope.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A delayed job's due time: it waited in a message schedule until then.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub run_at: Option<OffsetDateTime>,
    /// A job not started by then is not run: it expires.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// Where a signed CloudEvent goes when the job reaches a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

impl Envelope {
    /// When the job was meant to start: its `run_at` if delayed, else its acceptance.
    pub fn due_at(&self) -> OffsetDateTime {
        self.run_at
            .map_or(self.created_at, |run_at| run_at.max(self.created_at))
    }
}

/// Root of Codigo's UUIDv5 name space.
const CODIGO_NAMESPACE: Uuid = Uuid::from_u128(0x6c0d_1f6a_3f0e_4b8e_9a57_1c2d_c0d1_9000);

/// The id of a job: with an idempotency key, the UUIDv5 of tenant, type and key, so a
/// resubmission gets the same id (and is dropped as a duplicate) while two tenants using the
/// same key never collide; without one, a fresh time-ordered UUIDv7.
pub fn job_id(tenant: &str, job_type: &str, idempotency_key: Option<&str>) -> Uuid {
    match idempotency_key {
        Some(key) => {
            let tenant_space = Uuid::new_v5(&CODIGO_NAMESPACE, tenant.as_bytes());
            // A separator byte that cannot occur in a job type keeps `a.b` + `c` apart from `a.bc`.
            let name = [job_type.as_bytes(), b"\n", key.as_bytes()].concat();
            Uuid::new_v5(&tenant_space, &name)
        }
        None => Uuid::now_v7(),
    }
}

/// The id of a job made from a CloudEvent: the UUIDv5 of tenant, type, `source` and `id`
/// (the pair the CloudEvents spec makes unique), so two sources that both number their events
/// from 1 never collide, while a redelivered event is a duplicate. Events have a name space
/// of their own, apart from idempotency keys.
pub fn event_job_id(tenant: &str, job_type: &str, source: &str, event_id: &str) -> Uuid {
    let tenant_space = Uuid::new_v5(&CODIGO_NAMESPACE, tenant.as_bytes());
    let event_space = Uuid::new_v5(&tenant_space, b"cloudevents");
    // The source's length keeps (`a`, `bc`) apart from (`ab`, `c`).
    let name = format!("{job_type}\n{}:{source}{event_id}", source.len());
    Uuid::new_v5(&event_space, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_gives_stable_id_per_tenant_and_type() {
        let a = job_id("acme", "ledger.post", Some("k1"));
        assert_eq!(a, job_id("acme", "ledger.post", Some("k1")));
        assert_ne!(a, job_id("globex", "ledger.post", Some("k1")));
        assert_ne!(a, job_id("acme", "webhook.deliver", Some("k1")));
        assert_ne!(a, job_id("acme", "ledger.post", Some("k2")));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn event_id_depends_on_source_and_id() {
        let a = event_job_id("acme", "ledger.post", "/billing", "1");
        assert_eq!(a, event_job_id("acme", "ledger.post", "/billing", "1"));
        assert_ne!(a, event_job_id("acme", "ledger.post", "/shipping", "1"));
        assert_ne!(a, event_job_id("acme", "ledger.post", "/billing", "2"));
        assert_ne!(a, event_job_id("globex", "ledger.post", "/billing", "1"));
        assert_ne!(a, event_job_id("acme", "webhook.deliver", "/billing", "1"));
        assert_ne!(
            event_job_id("acme", "ledger.post", "a", "bc"),
            event_job_id("acme", "ledger.post", "ab", "c")
        );
        assert_ne!(a, job_id("acme", "ledger.post", Some("1")));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn no_key_gives_fresh_v7() {
        let a = job_id("acme", "ledger.post", None);
        let b = job_id("acme", "ledger.post", None);
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 7);
    }

    #[test]
    fn envelope_round_trips_and_refuses_unknown_fields() {
        let raw = serde_json::json!({
            "id": "0192f0c1-7b7e-7cc3-9d1e-3b1f6f1f2a10",
            "type": "ledger.post",
            "payload": {"account": "a", "amount_cents": 5, "currency": "EUR"},
            "created_at": "2026-01-02T03:04:05Z"
        });
        let envelope: Envelope = serde_json::from_value(raw.clone()).expect("decodes");
        assert_eq!(serde_json::to_value(&envelope).expect("encodes"), raw);
        let mut extra = raw;
        extra["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Envelope>(extra).is_err());
    }
}
