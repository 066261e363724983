//! Strategies shared by the property tests: JSON documents that look like
//! what clients and upstreams send (their field names, any shape).

use proptest::prelude::*;
use serde_json::Value;

/// Field names of both APIs' requests and of the providers' stream events,
/// so that generated objects reach deep into the parsers.
const NAMES: &[&str] = &[
    "agentExternalId",
    "agentId",
    "messages",
    "cursor",
    "actions",
    "stream",
    "role",
    "content",
    "type",
    "text",
    "data",
    "actionId",
    "clientTool",
    "name",
    "parameters",
    "status",
    "image",
    "mimeType",
    "url",
    "toolConfirmation",
    "message",
    "sessionId",
    "userId",
    "system",
    "async",
    "choices",
    "delta",
    "tool_calls",
    "index",
    "id",
    "function",
    "arguments",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "content_block",
    "partial_json",
    "thinking",
    "signature",
    "input",
    "stop_reason",
    "error",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(NAMES).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,12}",
    ]
}

/// Any JSON value, up to a few levels deep.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::from),
        proptest::sample::select(NAMES).prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}
