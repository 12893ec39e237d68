//! Arbitrary JSON for the property tests of several crates (the `proptest` feature): each test
//! chooses its own leaves, keys and tree size; how the trees are grown is shared.
use proptest::prelude::*;
use proptest::strategy::Union;
use serde_json::{json, Value};

/// How large generated trees grow: `prop_recursive`'s depth, desired size and expected branch
/// size, and fewer than `max_items` items in each array or object.
#[derive(Clone, Copy, Debug)]
pub struct TreeSize {
    pub depth: u32,
    pub desired_size: u32,
    pub expected_branch_size: u32,
    pub max_items: usize,
}

/// Null, booleans, i64, f64 and strings matching the regex `strings`: the leaves every JSON
/// property starts from. A test pushes the values it cares about next to them.
pub fn json_scalars(strings: &'static str) -> Vec<BoxedStrategy<Value>> {
    vec![
        Just(Value::Null).boxed(),
        any::<bool>().prop_map(Value::Bool).boxed(),
        any::<i64>().prop_map(|n| json!(n)).boxed(),
        any::<f64>().prop_map(|f| json!(f)).boxed(),
        strings.prop_map(Value::String).boxed(),
    ]
}

/// JSON trees: one of `leaves` (equally likely) at the bottom, arrays and objects keyed by
/// `keys` above.
pub fn json_trees(
    leaves: Vec<BoxedStrategy<Value>>,
    keys: BoxedStrategy<String>,
    size: TreeSize,
) -> impl Strategy<Value = Value> {
    Union::new(leaves).prop_recursive(
        size.depth,
        size.desired_size,
        size.expected_branch_size,
        move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..size.max_items).prop_map(Value::Array),
                prop::collection::btree_map(keys.clone(), inner, 0..size.max_items)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        },
    )
}
