//! The `ingest` fuzz target's property (fuzz/ingest_property.rs) as a proptest, so that it
//! runs in `make test` on stable: arbitrary bytes, JSON-shaped junk and envelope-shaped junk
//! through JSON decoding, envelope and payload validation and job-request decoding.
#[path = "../../fuzz/ingest_property.rs"]
mod ingest_property;

use codigo_testkit::arbitrary::{json_scalars, json_trees, TreeSize};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// JSON with the strings an envelope holds among its leaves and its field names among the
/// keys, so that decoding gets past the first checks.
fn json_value() -> impl Strategy<Value = Value> {
    let mut leaves = json_scalars(".{0,12}");
    leaves.push(
        prop_oneof![
            Just("ledger.post"),
            Just("webhook.deliver"),
            Just("EUR"),
            Just("2026-01-02T03:04:05Z"),
            Just("0192f0c1-7b7e-7cc3-9d1e-3b1f6f1f2a10"),
            Just("https://example.com/hook"),
        ]
        .prop_map(|s| Value::String(s.into()))
        .boxed(),
    );
    let size = TreeSize {
        depth: 4,
        desired_size: 48,
        expected_branch_size: 6,
        max_items: 6,
    };
    json_trees(leaves, key().boxed(), size)
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("id"),
            Just("type"),
            Just("payload"),
            Just("created_at"),
            Just("tenant"),
            Just("idempotency_key"),
            Just("account"),
            Just("amount_cents"),
            Just("currency"),
            Just("memo"),
            Just("url"),
            Just("body"),
            Just("headers"),
        ]
        .prop_map(str::to_owned),
        "[a-z~/]{0,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        ingest_property::check(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        ingest_property::check(&serde_json::to_vec(&value).unwrap_or_default());
    }

    #[test]
    fn envelope_shaped_json_never_panics(
        fields in prop::collection::btree_map(key(), json_value(), 0..8),
        job_type in prop_oneof![Just("ledger.post"), Just("webhook.deliver"), Just("no.such"), Just("Bad")],
    ) {
        let mut object: Map<String, Value> = fields.into_iter().collect();
        object.insert("type".into(), json!(job_type));
        ingest_property::check(&serde_json::to_vec(&Value::Object(object)).unwrap_or_default());
    }
}
