use futures_util::StreamExt;
use serde_json::json;

use super::stream::Assembler;
use super::*;
use crate::domain::{AssistantPart, HistoryItem, UserPart};
use crate::llm::ProviderEvent;
use crate::tools::{Expose, ToolSpec};

fn request<'a>(history: &'a [HistoryItem], tools: &'a [&'a ToolSpec]) -> ChatRequest<'a> {
    ChatRequest {
        model: "claude-x",
        system: Some("be brief"),
        messages: history,
        temperature: Some(0.2),
        max_tokens: None,
        tools,
        thinking_budget: None,
        tool_choice: None,
        params: None,
        deadline: tokio::time::Instant::now(),
    }
}

#[test]
fn history_becomes_alternating_messages_with_blocks() {
    let thinking = json!({"type": "thinking", "thinking": "add them", "signature": "sig=="});
    let history = vec![
        HistoryItem::User {
            parts: vec![
                UserPart::Text {
                    text: "look".into(),
                },
                UserPart::Image {
                    media_type: "image/png".into(),
                    data: "iVBORw0KGgo=".into(),
                },
            ],
        },
        HistoryItem::Reasoning {
            provider: "anthropic".into(),
            blob: thinking.to_string(),
        },
        HistoryItem::Reasoning {
            provider: "other".into(),
            blob: "opaque".into(),
        },
        HistoryItem::Assistant {
            parts: vec![AssistantPart::Text {
                text: "Let me add.".into(),
            }],
            tool_calls: vec![
                ToolCall {
                    id: "toolu_1".into(),
                    name: "calculator".into(),
                    arguments: r#"{"expression":"1+1"}"#.into(),
                },
                ToolCall {
                    id: "toolu_2".into(),
                    name: "calculator".into(),
                    arguments: "not json".into(),
                },
                ToolCall {
                    id: "toolu_3".into(),
                    name: "calculator".into(),
                    arguments: " {\"expression\": \"2\"} ".into(),
                },
            ],
        },
        HistoryItem::ToolResult {
            call_id: "toolu_1".into(),
            name: "calculator".into(),
            content: "2".into(),
            is_error: false,
        },
        HistoryItem::ToolResult {
            call_id: "toolu_2".into(),
            name: "calculator".into(),
            content: "bad arguments".into(),
            is_error: true,
        },
        HistoryItem::user_text("thanks"),
    ];
    let spec = ToolSpec {
        name: "calculator".into(),
        description: "adds".into(),
        parameters: json!({"type": "object"}),
        origin: crate::tools::ToolOrigin::Builtin,
        timeout: std::time::Duration::from_secs(1),
        expose: Expose::default(),
        confirm: false,
    };
    let tools = [&spec];
    let body: serde_json::Value =
        serde_json::from_slice(&encode_request(&request(&history, &tools), true).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-x",
            "max_tokens": 4096,
            "system": "be brief",
            "temperature": 0.2,
            "stream": true,
            "tools": [{"name": "calculator", "description": "adds", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    thinking,
                    {"type": "text", "text": "Let me add."},
                    {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "1+1"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "calculator", "input": {}},
                    {"type": "tool_use", "id": "toolu_3", "name": "calculator", "input": {"expression": "2"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "2"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "bad arguments", "is_error": true},
                    {"type": "text", "text": "thanks"}
                ]}
            ]
        })
    );
}

#[test]
fn thinking_sets_its_budget_and_drops_the_temperature() {
    let history = vec![HistoryItem::user_text("hi")];
    let mut req = request(&history, &[]);
    req.thinking_budget = Some(2048);
    let body: serde_json::Value =
        serde_json::from_slice(&encode_request(&req, false).unwrap()).unwrap();
    assert_eq!(
        body["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    assert_eq!(body["max_tokens"], 2048 + 4096);
    assert!(body.get("temperature").is_none());
}

/// One answer in both wire shapes: a JSON message and the SSE events of the same message.
fn golden() -> (serde_json::Value, Vec<(&'static str, serde_json::Value)>) {
    let message = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris", "days": 2}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 20, "output_tokens": 31, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}
    });
    let events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "The user "}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "wants weather."}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me "}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "check."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "ris\", \"days\": 2}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 31}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    (message, events)
}

fn fold(events: Vec<ProviderEvent>) -> Completion {
    let mut c = Completion::default();
    for e in events {
        match e {
            ProviderEvent::TextDelta(t) => c.text.push_str(&t),
            ProviderEvent::Reasoning(r) => c.reasoning.push(r),
            ProviderEvent::ToolCall(call) => c.tool_calls.push(call),
            ProviderEvent::Usage(u) => c.usage.add(u),
            ProviderEvent::Finish(f) => c.finish = Some(f),
        }
    }
    c
}

#[test]
fn a_streamed_answer_equals_the_same_answer_in_one_piece() {
    let (message, events) = golden();
    let whole = parse(message.to_string().as_bytes()).unwrap();
    assert_eq!(whole.text, "Let me check.");
    assert_eq!(
        whole.tool_calls,
        vec![ToolCall {
            id: "toolu_9".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris","days":2}"#.into(),
        }]
    );
    assert_eq!(whole.finish, Some(FinishReason::ToolCalls));
    assert_eq!(
        whole.usage,
        Usage {
            input_tokens: Some(125),
            output_tokens: Some(31),
            cache_read_tokens: Some(100),
            cache_write_tokens: Some(5),
        }
    );
    assert_eq!(whole.reasoning.len(), 1);
    let blob: serde_json::Value = serde_json::from_str(&whole.reasoning[0].blob).unwrap();
    assert_eq!(
        blob, message["content"][0],
        "the thinking block and its signature are kept"
    );

    let mut asm = Assembler::default();
    let mut out = Vec::new();
    for (name, data) in &events {
        out.extend(asm.push(name, &data.to_string()).unwrap());
    }
    out.push(asm.finish().unwrap());
    let usages = out
        .iter()
        .filter(|e| matches!(e, ProviderEvent::Usage(_)))
        .count();
    assert_eq!(usages, 2, "input at message_start, output at message_delta");
    let texts = out
        .iter()
        .filter(|e| matches!(e, ProviderEvent::TextDelta(_)))
        .count();
    assert_eq!(texts, 2, "text is forwarded as it arrives");
    assert_eq!(fold(out), whole);
}

#[test]
fn cut_and_failing_streams_are_errors_of_the_right_class() {
    let (_, events) = golden();
    let mut asm = Assembler::default();
    for (name, data) in &events[..9] {
        asm.push(name, &data.to_string()).unwrap();
    }
    assert!(matches!(asm.finish(), Err(ProviderError::Transient(_))));

    let mut asm = Assembler::default();
    let e = asm
        .push(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
    assert!(matches!(e, ProviderError::Overloaded { retry_after: None }));
    assert!(e.retryable());
    let e = asm
        .push(
            "error",
            r#"{"type":"error","error":{"type":"invalid_request_error"}}"#,
        )
        .unwrap_err();
    assert!(!e.fails_over());
    assert!(asm.push("message_start", "{not json").is_err());
    assert!(
        asm.push("brand_new_event", r#"{"type":"brand_new_event"}"#)
            .unwrap()
            .is_empty(),
        "unknown events are skipped"
    );
}

#[tokio::test]
async fn events_without_names_are_read_by_their_type() {
    let (message, events) = golden();
    let sse = futures_util::stream::iter(events.into_iter().map(|(_, data)| {
        Ok(eventsource_stream::Event {
            event: "message".into(),
            data: data.to_string(),
            id: String::new(),
            retry: None,
        })
    }));
    let out: Vec<ProviderEvent> = stream::events(sse, crate::llm::http::Limits::default())
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(fold(out), parse(message.to_string().as_bytes()).unwrap());
}

#[test]
fn redacted_thinking_and_refusals() {
    let c = parse(
        br#"{"content":[{"type":"redacted_thinking","data":"EmwKAhgB"},{"type":"text","text":"No."},{"type":"server_tool_use","id":"x"}],"stop_reason":"refusal"}"#,
    )
    .unwrap();
    assert_eq!(c.text, "No.");
    assert_eq!(c.finish, Some(FinishReason::ContentFilter));
    assert_eq!(
        c.reasoning[0].blob,
        r#"{"data":"EmwKAhgB","type":"redacted_thinking"}"#
    );
    assert_eq!(c.usage, Usage::default());
    assert!(parse(b"<html>").is_err());
}

#[test]
fn hostile_block_indexes_and_sizes_fail_without_allocating() {
    let mut asm = Assembler::default();
    let e = asm
        .push(
            "content_block_start",
            r#"{"type":"content_block_start","index":4000000000,"content_block":{"type":"text","text":""}}"#,
        )
        .unwrap_err();
    assert!(matches!(e, ProviderError::Upstream(_)), "{e:?}");

    let mut asm = Assembler::new(crate::llm::http::Limits {
        tool_call: 1024,
        ..Default::default()
    });
    asm.push(
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
    )
    .unwrap();
    let delta = serde_json::json!({
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": "x".repeat(600)}
    })
    .to_string();
    asm.push("content_block_delta", &delta).unwrap();
    let e = asm.push("content_block_delta", &delta).unwrap_err();
    assert!(matches!(e, ProviderError::Upstream(_)), "{e:?}");
}

mod property_tests {
    use proptest::prelude::*;

    use super::*;

    const EVENTS: [&str; 9] = [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
        "unknown_event",
    ];

    proptest! {
        /// Any sequence of named events with any data: events or an error,
        /// never a panic.
        #[test]
        fn any_events_are_assembled_or_refused_without_panicking(
            events in prop::collection::vec(
                (proptest::sample::select(&EVENTS[..]), crate::testkit::json(), any::<u64>()),
                0..16,
            ),
        ) {
            let mut asm = Assembler::new(crate::llm::http::Limits { tool_call: 4096, ..Default::default() });
            for (name, mut data, index) in events {
                if let Some(o) = data.as_object_mut() {
                    o.insert("index".into(), serde_json::json!(index % 300));
                }
                if asm.push(name, &data.to_string()).is_err() {
                    return Ok(());
                }
            }
            let _ = asm.finish();
        }
    }
}
