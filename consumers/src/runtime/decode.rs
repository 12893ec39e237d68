//! From a message body to a typed job: the envelope and payload checked against their
//! schemas, then decoded into the kind's payload type.
use codigo_common::contract::DlqReason;
use codigo_schemas::{registry, Envelope, JobType, SchemaError};
use serde_json::Value;
use uuid::Uuid;

use super::job::Payload;

/// Why a message never reached its worker.
pub(crate) struct Rejected {
    pub reason: DlqReason,
    pub error: String,
    pub id: Option<Uuid>,
    /// The body, when it was at least JSON: its tenant and payload go on the jobs row.
    pub body: Option<Value>,
}

/// Decodes a body of job type `name` into `K`, its payload checked against `schema`.
pub(crate) fn decode<K: Payload>(
    name: &str,
    schema: &JobType,
    body: &[u8],
) -> Result<(Envelope, K), Rejected> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Rejected {
        reason: DlqReason::Decode,
        error: format!("body is not JSON: {e}"),
        id: None,
        body: None,
    })?;
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    let rejected = |error: String, body: Value| Rejected {
        reason: DlqReason::Schema,
        error,
        id,
        body: Some(body),
    };
    if value.get("type").and_then(Value::as_str) != Some(name) {
        let error = format!(
            "envelope type {} arrived on the {} subject",
            value.get("type").unwrap_or(&Value::Null),
            name
        );
        return Err(rejected(error, value));
    }
    if let Err(error) = registry().validate_envelope_as(&value, schema) {
        return Err(rejected(describe(error), value));
    }
    // Valid against the schema, so a failure here means the schema and the type disagree,
    // which no retry fixes.
    let payload = match K::deserialize(value.get("payload").unwrap_or(&Value::Null)) {
        Ok(payload) => payload,
        Err(e) => {
            let error = format!("payload does not decode into {}: {e}", name);
            return Err(rejected(error, value));
        }
    };
    // Taken apart rather than copied.
    let envelope = serde_json::from_value(value).map_err(|e| Rejected {
        reason: DlqReason::Schema,
        error: format!("envelope: {e}"),
        id,
        body: None,
    })?;
    Ok((envelope, payload))
}

fn describe(error: SchemaError) -> String {
    match error {
        SchemaError::Invalid(violations) => violations
            .iter()
            .map(|v| {
                let pointer = if v.pointer.is_empty() {
                    "/"
                } else {
                    &v.pointer
                };
                format!("{pointer}: {}", v.message)
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}
