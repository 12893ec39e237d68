//! Every field rule of every schema, with a valid and an invalid example.
use codigo_schemas::{registry, SchemaError, Violation};
use serde_json::{json, Value};

fn payload_violations(job_type: &str, payload: Value) -> Vec<Violation> {
    match registry()
        .job_type(job_type)
        .expect("registered")
        .validate(&payload)
    {
        Ok(()) => Vec::new(),
        Err(SchemaError::Invalid(v)) => v,
        Err(other) => panic!("unexpected {other}"),
    }
}

fn pointers(violations: &[Violation]) -> Vec<&str> {
    violations.iter().map(|v| v.pointer.as_str()).collect()
}

fn ledger() -> Value {
    json!({"account": "acct-1", "amount_cents": -1250, "currency": "EUR", "memo": "refund"})
}

#[test]
fn valid_ledger_post_passes() {
    assert!(payload_violations("ledger.post", ledger()).is_empty());
    let mut no_memo = ledger();
    no_memo.as_object_mut().unwrap().remove("memo");
    assert!(payload_violations("ledger.post", no_memo).is_empty());
}

#[test]
fn ledger_post_field_rules() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("account", json!(""), "/account"),
        ("account", json!("x".repeat(65)), "/account"),
        ("account", json!(7), "/account"),
        ("amount_cents", json!(0), "/amount_cents"),
        ("amount_cents", json!(1.5), "/amount_cents"),
        (
            "amount_cents",
            json!(1_000_000_000_001_i64),
            "/amount_cents",
        ),
        (
            "amount_cents",
            json!(-1_000_000_000_001_i64),
            "/amount_cents",
        ),
        ("amount_cents", json!("10"), "/amount_cents"),
        ("currency", json!("eur"), "/currency"),
        ("currency", json!("EURO"), "/currency"),
        ("memo", json!("m".repeat(257)), "/memo"),
        ("extra", json!(true), ""),
    ];
    for (field, value, pointer) in cases {
        let mut payload = ledger();
        payload[field] = value.clone();
        let violations = payload_violations("ledger.post", payload);
        assert_eq!(pointers(&violations), vec![pointer], "{field} = {value}");
    }
    for edge in [1_000_000_000_000_i64, -1_000_000_000_000, 1, -1] {
        let mut payload = ledger();
        payload["amount_cents"] = json!(edge);
        assert!(
            payload_violations("ledger.post", payload).is_empty(),
            "{edge}"
        );
    }
}

#[test]
fn ledger_post_reports_every_violation() {
    let violations = payload_violations("ledger.post", json!({"amount_cents": 0, "currency": "x"}));
    let mut found = pointers(&violations);
    found.sort_unstable();
    // Missing account is reported at the object itself.
    assert_eq!(found, vec!["", "/amount_cents", "/currency"]);
}

#[test]
fn webhook_deliver_field_rules() {
    let ok = json!({"url": "https://example.com/hook?a=1", "body": {"any": ["json", 1]},
                    "headers": {"X-Trace": "abc"}});
    assert!(payload_violations("webhook.deliver", ok.clone()).is_empty());
    for body in [json!(null), json!("text"), json!(3), json!([1, 2])] {
        let mut p = ok.clone();
        p["body"] = body;
        assert!(payload_violations("webhook.deliver", p).is_empty());
    }
    let cases: Vec<(&str, Value, &str)> = vec![
        ("url", json!("ftp://example.com"), "/url"),
        ("url", json!("not a url"), "/url"),
        ("url", json!("http://"), "/url"),
        (
            "url",
            json!(format!("https://e.com/{}", "a".repeat(2048))),
            "/url",
        ),
        ("headers", json!({"X-N": 1}), "/headers/X-N"),
        ("headers", json!({"bad header": "v"}), "/headers"),
        ("headers", json!("x"), "/headers"),
    ];
    for (field, value, pointer) in cases {
        let mut payload = ok.clone();
        payload[field] = value.clone();
        let violations = payload_violations("webhook.deliver", payload);
        assert_eq!(pointers(&violations), vec![pointer], "{field} = {value}");
    }
    let missing_body = json!({"url": "http://example.com"});
    assert_eq!(
        pointers(&payload_violations("webhook.deliver", missing_body)),
        vec![""]
    );
}

fn envelope() -> Value {
    json!({
        "id": "0192f0c1-7b7e-7cc3-9d1e-3b1f6f1f2a10",
        "type": "ledger.post",
        "payload": ledger(),
        "idempotency_key": "order-42",
        "created_at": "2026-11-26T10:00:00.123Z",
        "tenant": "acme"
    })
}

#[test]
fn envelope_rules() {
    assert!(registry().validate_envelope(&envelope()).is_ok());
    let cases: Vec<(&str, Value, &str)> = vec![
        ("id", json!("not-a-uuid"), "/id"),
        ("type", json!("Ledger"), "/type"),
        ("payload", json!([]), "/payload"),
        ("idempotency_key", json!(""), "/idempotency_key"),
        ("created_at", json!("yesterday"), "/created_at"),
        ("tenant", json!(""), "/tenant"),
        ("unexpected", json!(1), ""),
    ];
    for (field, value, pointer) in cases {
        let mut e = envelope();
        e[field] = value.clone();
        match registry().validate_envelope(&e) {
            Err(SchemaError::Invalid(v)) => assert_eq!(pointers(&v), vec![pointer], "{field}"),
            other => panic!("{field} = {value}: {other:?}"),
        }
    }
}

#[test]
fn envelope_payload_pointers_are_prefixed() {
    let mut e = envelope();
    e["payload"]["currency"] = json!("usd");
    match registry().validate_envelope(&e) {
        Err(SchemaError::Invalid(v)) => assert_eq!(pointers(&v), vec!["/payload/currency"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn envelope_with_unknown_type_is_refused() {
    let mut e = envelope();
    e["type"] = json!("nope.nothing");
    assert!(matches!(
        registry().validate_envelope(&e),
        Err(SchemaError::UnknownType(t)) if t == "nope.nothing"
    ));
}

#[test]
fn registry_lists_both_types() {
    let names: Vec<_> = registry().names().collect();
    assert_eq!(names, vec!["ledger.post", "webhook.deliver"]);
}
