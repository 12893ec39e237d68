//! Properties of envelope and payload validation: arbitrary JSON never panics the validator,
//! generated valid payloads and envelopes always pass, and a single corrupted field is
//! reported once, at its own pointer.
use codigo_schemas::{registry, SchemaError, Violation};
use codigo_testkit::arbitrary::{json_scalars, json_trees, TreeSize};
use proptest::prelude::*;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Any JSON, u64 beyond i64 included.
fn any_json() -> impl Strategy<Value = Value> {
    let mut leaves = json_scalars(".{0,20}");
    leaves.push(any::<u64>().prop_map(|n| json!(n)).boxed());
    let size = TreeSize {
        depth: 5,
        desired_size: 64,
        expected_branch_size: 8,
        max_items: 8,
    };
    json_trees(leaves, ".{0,10}".boxed(), size)
}

/// Strings of `min..=max` characters (JSON Schema lengths count characters, not bytes).
fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), min..=max).prop_map(|c| c.into_iter().collect())
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        (1..=1_000_000_000_000_i64),
        (-1_000_000_000_000..=-1_i64),
        Just(1_000_000_000_000),
        Just(-1_000_000_000_000),
    ]
}

fn ledger_payload() -> impl Strategy<Value = Value> {
    (
        text(1, 64),
        amount(),
        "[A-Z]{3}",
        prop::option::of(text(0, 256)),
    )
        .prop_map(|(account, amount, currency, memo)| {
            let mut payload =
                json!({"account": account, "amount_cents": amount, "currency": currency});
            if let Some(memo) = memo {
                payload["memo"] = json!(memo);
            }
            payload
        })
}

fn webhook_payload() -> impl Strategy<Value = Value> {
    (
        "https?://[a-z0-9.-]{1,30}(:[0-9]{1,5})?(/[a-zA-Z0-9/_.~-]{0,40})?",
        any_json(),
        prop::option::of(prop::collection::btree_map(
            "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}",
            text(0, 100),
            0..5,
        )),
    )
        .prop_map(|(url, body, headers)| {
            let mut payload = json!({"url": url, "body": body});
            if let Some(headers) = headers {
                payload["headers"] = json!(headers);
            }
            payload
        })
}

fn uuid() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).hyphenated().to_string())
}

fn timestamp() -> impl Strategy<Value = String> {
    // Years 1970 to 2200, with and without fractions.
    (0..7_258_118_400_i64, 0..1_000_000_000_u32).prop_map(|(secs, nanos)| {
        let time = OffsetDateTime::from_unix_timestamp(secs).expect("in range")
            + time::Duration::nanoseconds(i64::from(nanos));
        time.format(&Rfc3339).expect("formats")
    })
}

fn envelope() -> impl Strategy<Value = Value> {
    let payload = prop_oneof![
        ledger_payload().prop_map(|p| ("ledger.post", p)),
        webhook_payload().prop_map(|p| ("webhook.deliver", p)),
    ];
    (
        uuid(),
        payload,
        prop::option::of(text(1, 256)),
        timestamp(),
        prop::option::of(text(1, 64)),
    )
        .prop_map(|(id, (job_type, payload), key, created_at, tenant)| {
            let mut envelope = json!({"id": id, "type": job_type, "payload": payload,
                                      "created_at": created_at});
            if let Some(key) = key {
                envelope["idempotency_key"] = json!(key);
            }
            if let Some(tenant) = tenant {
                envelope["tenant"] = json!(tenant);
            }
            envelope
        })
}

fn violations_of(result: Result<(), SchemaError>) -> Vec<Violation> {
    match result {
        Ok(()) => Vec::new(),
        Err(SchemaError::Invalid(v)) => v,
        Err(other) => panic!("unexpected {other}"),
    }
}

fn pointers(violations: &[Violation]) -> Vec<&str> {
    violations.iter().map(|v| v.pointer.as_str()).collect()
}

/// A value that breaks the rule of one ledger.post field, and the pointer it is reported at
/// (the payload itself for a missing or unknown field).
fn ledger_corruption() -> impl Strategy<Value = (&'static str, Option<Value>, &'static str)> {
    let not_a_string = prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
        Just(json!([])),
        Just(json!({})),
    ];
    prop_oneof![
        Just(("account", Some(json!("")), "/account")),
        text(65, 80).prop_map(|s| ("account", Some(json!(s)), "/account")),
        not_a_string
            .clone()
            .prop_map(|v| ("account", Some(v), "/account")),
        Just(("account", None, "")),
        Just(("amount_cents", Some(json!(0)), "/amount_cents")),
        (1_000_000_000_001..i64::MAX).prop_map(|n| (
            "amount_cents",
            Some(json!(n)),
            "/amount_cents"
        )),
        (i64::MIN..-1_000_000_000_000).prop_map(|n| (
            "amount_cents",
            Some(json!(n)),
            "/amount_cents"
        )),
        (-1e9..1e9_f64)
            .prop_filter("not a whole number", |f| f.fract() != 0.0)
            .prop_map(|f| ("amount_cents", Some(json!(f)), "/amount_cents")),
        "[0-9]{1,5}".prop_map(|s| ("amount_cents", Some(json!(s)), "/amount_cents")),
        Just(("amount_cents", None, "")),
        "[a-z]{3}|[A-Z]{1,2}|[A-Z]{4,6}|[0-9]{3}".prop_map(|s| (
            "currency",
            Some(json!(s)),
            "/currency"
        )),
        not_a_string
            .clone()
            .prop_map(|v| ("currency", Some(v), "/currency")),
        Just(("currency", None, "")),
        text(257, 300).prop_map(|s| ("memo", Some(json!(s)), "/memo")),
        not_a_string.prop_map(|v| ("memo", Some(v), "/memo")),
        any_json().prop_map(|v| ("unexpected", Some(v), "")),
    ]
}

/// The same for the envelope's own fields.
fn envelope_corruption() -> impl Strategy<Value = (&'static str, Option<Value>, &'static str)> {
    prop_oneof![
        "[g-z]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".prop_map(|s| (
            "id",
            Some(json!(s)),
            "/id"
        )),
        uuid().prop_map(|s| ("id", Some(json!(s.to_uppercase().replace('-', ""))), "/id")),
        Just(("id", None, "")),
        "[A-Z][a-z]{2,8}|[a-z]{2,8}|[a-z]{2,5}\\.[A-Z]{2,5}".prop_map(|s| (
            "type",
            Some(json!(s)),
            "/type"
        )),
        prop_oneof![
            Just(json!([])),
            Just(json!("x")),
            Just(json!(1)),
            Just(Value::Null)
        ]
        .prop_map(|v| ("payload", Some(v), "/payload")),
        Just(("idempotency_key", Some(json!("")), "/idempotency_key")),
        text(257, 280).prop_map(|s| ("idempotency_key", Some(json!(s)), "/idempotency_key")),
        prop_oneof![
            Just("yesterday"),
            Just("2026-13-01T00:00:00Z"),
            Just("2026-01-01"),
            Just("2026-01-01T25:00:00Z"),
        ]
        .prop_map(|s| ("created_at", Some(json!(s)), "/created_at")),
        Just(("created_at", None, "")),
        Just(("tenant", Some(json!("")), "/tenant")),
        text(65, 80).prop_map(|s| ("tenant", Some(json!(s)), "/tenant")),
        any_json().prop_map(|v| ("unexpected", Some(v), "")),
    ]
}

fn corrupt(mut object: Value, field: &str, value: Option<Value>) -> Value {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(value) => {
                map.insert(field.to_owned(), value);
            }
            None => {
                map.remove(field);
            }
        }
    }
    object
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics_the_validators(value in any_json()) {
        let _ = registry().validate_envelope(&value);
        for job_type in registry().job_types() {
            let _ = job_type.validate(&value);
        }
        let mut wrapped = json!({"type": "ledger.post", "payload": value.clone()});
        let _ = registry().validate_envelope(&wrapped);
        wrapped["type"] = json!("webhook.deliver");
        let _ = registry().validate_envelope(&wrapped);
    }

    #[test]
    fn valid_ledger_payloads_pass(payload in ledger_payload()) {
        let found = violations_of(registry().job_type("ledger.post").unwrap().validate(&payload));
        prop_assert!(found.is_empty(), "{payload}: {found:?}");
    }

    #[test]
    fn valid_webhook_payloads_pass(payload in webhook_payload()) {
        let found = violations_of(registry().job_type("webhook.deliver").unwrap().validate(&payload));
        prop_assert!(found.is_empty(), "{payload}: {found:?}");
    }

    #[test]
    fn valid_envelopes_pass(envelope in envelope()) {
        let found = violations_of(registry().validate_envelope(&envelope));
        prop_assert!(found.is_empty(), "{envelope}: {found:?}");
    }

    #[test]
    fn one_corrupted_payload_field_is_reported_at_its_pointer(
        payload in ledger_payload(),
        (field, value, pointer) in ledger_corruption(),
    ) {
        let broken = corrupt(payload, field, value);
        let found = violations_of(registry().job_type("ledger.post").unwrap().validate(&broken));
        prop_assert_eq!(pointers(&found), vec![pointer], "{}", broken);
    }

    #[test]
    fn one_corrupted_envelope_field_is_reported_at_its_pointer(
        envelope in envelope(),
        (field, value, pointer) in envelope_corruption(),
    ) {
        let broken = corrupt(envelope, field, value);
        let found = violations_of(registry().validate_envelope(&broken));
        prop_assert_eq!(pointers(&found), vec![pointer], "{}", broken);
    }

    #[test]
    fn a_corrupted_payload_field_inside_an_envelope_is_prefixed(
        payload in ledger_payload(),
        (field, value, pointer) in ledger_corruption(),
        id in uuid(),
    ) {
        let envelope = json!({"id": id, "type": "ledger.post",
            "payload": corrupt(payload, field, value), "created_at": "2026-01-02T03:04:05Z"});
        let found = violations_of(registry().validate_envelope(&envelope));
        prop_assert_eq!(pointers(&found), vec![format!("/payload{pointer}")], "{}", envelope);
    }
}
