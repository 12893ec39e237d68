//! The property the `ingest` fuzz target and the `ingest_properties` proptest (producer tests)
//! both check: arbitrary bytes go through the ingest decoding path without a panic, and every
//! violation reported points at a place that exists in the input.
use codigo_producer::http::JobRequest;
use codigo_schemas::{registry, Envelope, SchemaError, Violation};
use serde_json::Value;

fn assert_points_into(value: &Value, violations: &[Violation]) {
    assert!(
        !violations.is_empty(),
        "an Invalid error names its violations"
    );
    for violation in violations {
        assert!(
            value.pointer(&violation.pointer).is_some(),
            "violation pointer {:?} ({}) does not exist in {value}",
            violation.pointer,
            violation.message
        );
    }
}

/// Runs `bytes` through what the gateway and the workers do with a body.
pub fn check(bytes: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    // The workers: the envelope from the work stream, validated, then decoded.
    match registry().validate_envelope(&value) {
        Ok(()) => {
            // A valid envelope normally decodes; where the schema's date-time and the RFC 3339
            // parser disagree the worker dead-letters it (reason `schema`), which is fine, but
            // nothing may panic.
            let _ = serde_json::from_value::<Envelope>(value.clone());
        }
        Err(SchemaError::Invalid(violations)) => assert_points_into(&value, &violations),
        Err(SchemaError::UnknownType(_)) => {}
    }
    // The gateway: a job request body, its type looked up and its payload validated.
    if let Ok(request) = serde_json::from_value::<JobRequest>(value) {
        if let Ok(job_type) = registry().job_type(&request.job_type) {
            match job_type.validate(&request.payload) {
                Ok(()) | Err(SchemaError::UnknownType(_)) => {}
                Err(SchemaError::Invalid(violations)) => {
                    assert_points_into(&request.payload, &violations)
                }
            }
        }
    }
}
