//! The `anthropic` provider against a mock Messages API that is a real HTTP
//! server: the golden cases answered as JSON and streamed must give the same
//! bodies, tool use round trips with thinking blocks kept, images.

use serde_json::{Value, json};

use crate::anthropic_mock::{self, Mock, Reply, agent_toml, message, provider_toml, tool_message};
use crate::helpers::*;
use crate::streaming::read_events;

async fn app_on(mock: &Mock, agent_extra: &str) -> TestApp {
    spawn_app_with(Options {
        extra_toml: format!(
            "{}{}",
            provider_toml(
                "claude",
                mock,
                "max_retries = 0\nanthropic_version = \"2023-06-01\""
            ),
            agent_toml("claude", "claude", agent_extra)
        ),
        ..Default::default()
    })
    .await
}

/// POST `body` to `url` as JSON, or streamed, and return the final body.
async fn final_body(app: &TestApp, url: &str, body: &Value, stream: bool) -> Value {
    let mut body = body.clone();
    if stream {
        body["stream"] = json!(true);
    }
    let res = app.client.post(url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    if !stream {
        return res.json().await.unwrap();
    }
    let events = read_events(res).await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "done", "{:?}", last.data);
    last.data.clone()
}

/// A body with the per-conversation random parts taken out.
fn comparable(mut body: Value) -> Value {
    if let Some(r) = body.get_mut("response").and_then(Value::as_object_mut) {
        r.remove("cursor");
    }
    if let Some(b) = body.as_object_mut() {
        b.remove("sessionId");
    }
    body
}

#[tokio::test]
async fn golden_cases_stream_exactly_as_they_answer_in_json() {
    let mock = anthropic_mock::start().await;
    let app = app_on(&mock, r#"tools = ["calculator"]"#).await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
    let cases: Vec<(&str, Vec<Reply>, Value)> = vec![
        (
            "plain text",
            vec![Reply::Message(message("Hello there, how can I help?"))],
            json!([{"role": "user", "content": {"type": "text", "text": "hi"}}]),
        ),
        (
            "tool use round trip",
            vec![
                Reply::Message(tool_message(
                    "toolu_01",
                    "calculator",
                    json!({"expression": "6*7"}),
                )),
                Reply::Message(message("It is 42.")),
            ],
            json!([{"role": "user", "content": {"type": "text", "text": "what is 6*7?"}}]),
        ),
        (
            "image",
            vec![Reply::Message(message("A red pixel."))],
            json!([{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "mediaType": "image/png", "data": png}
            ]}]),
        ),
    ];
    for (name, replies, messages) in cases {
        let cognite = json!({"agentExternalId": "claude", "messages": messages});
        let mut bodies = Vec::new();
        let mut upstream_bodies = Vec::new();
        for stream in [false, true] {
            let before = mock.calls();
            mock.push(replies.clone());
            bodies.push(comparable(
                final_body(&app, &app.chat_url("p"), &cognite, stream).await,
            ));
            let mut sent: Vec<Value> = mock.received()[before..]
                .iter()
                .map(|r| r.body.clone())
                .collect();
            for s in &mut sent {
                s.as_object_mut().unwrap().remove("stream");
            }
            upstream_bodies.push(sent);
        }
        assert_eq!(
            bodies[0], bodies[1],
            "{name}: Cognite JSON and stream differ"
        );
        assert_eq!(
            upstream_bodies[0], upstream_bodies[1],
            "{name}: the upstream saw different requests"
        );
        assert_eq!(upstream_bodies[0].len(), replies.len(), "{name}");

        // The Quant API: usage included.
        let quant = json!({"message": "what is 6*7?", "userId": "u1"});
        let url = app.quant("acme/ai/agents/claude/chat");
        let mut bodies = Vec::new();
        for stream in [false, true] {
            mock.push(replies.clone());
            bodies.push(comparable(final_body(&app, &url, &quant, stream).await));
        }
        assert_eq!(bodies[0], bodies[1], "{name}: Quant JSON and stream differ");
    }
}

#[tokio::test]
async fn a_tool_use_round_trip_keeps_thinking_blocks_and_signatures_across_turns() {
    let mock = anthropic_mock::start().await;
    let app = app_on(&mock, r#"tools = ["calculator"]"#).await;
    mock.push([
        Reply::Message(tool_message(
            "toolu_01",
            "calculator",
            json!({"expression": "6*7"}),
        )),
        Reply::Message(message("It is 42.")),
    ]);
    let (status, one) = app.say("p", "claude", "what is 6*7?", None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(text_of(&one), "Let me work that out.It is 42.");

    let received = mock.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].api_key.as_deref(),
        Some("sk-test-secret-key-123")
    );
    assert_eq!(received[0].version.as_deref(), Some("2023-06-01"));
    let first = &received[0].body;
    assert_eq!(first["system"], SYSTEM_PROMPT);
    assert_eq!(first["model"], "claude-test");
    assert_eq!(first["max_tokens"], 512);
    assert_eq!(first["tools"][0]["name"], "calculator");
    assert!(first["tools"][0]["input_schema"].is_object());
    let thinking = json!({"type": "thinking", "thinking": "I should use the tool.", "signature": "c2lnbmF0dXJl"});
    let assistant = json!({"role": "assistant", "content": [
        thinking,
        {"type": "text", "text": "Let me work that out."},
        {"type": "tool_use", "id": "toolu_01", "name": "calculator", "input": {"expression": "6*7"}}
    ]});
    assert_eq!(
        received[1].body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "what is 6*7?"}]},
            assistant,
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "42"}]}
        ])
    );

    // Turn two, from the cursor: the thinking block goes back verbatim.
    mock.push([Reply::Message(message("You're welcome."))]);
    let (status, _) = app
        .say("p", "claude", "thanks", Some(&cursor_of(&one)))
        .await;
    assert_eq!(status, 200);
    let third = &mock.received()[2].body["messages"];
    assert_eq!(third[1], assistant);
    assert_eq!(
        third[3],
        json!({"role": "assistant", "content": [{"type": "text", "text": "It is 42."}]})
    );
    assert_eq!(
        third[4],
        json!({"role": "user", "content": [{"type": "text", "text": "thanks"}]})
    );
}

#[tokio::test]
async fn usage_counts_cache_tokens_over_every_step() {
    let mock = anthropic_mock::start().await;
    let app = app_on(&mock, r#"tools = ["calculator"]"#).await;
    mock.push([
        Reply::Message(tool_message(
            "toolu_01",
            "calculator",
            json!({"expression": "1+1"}),
        )),
        Reply::Message(message("2")),
    ]);
    let (status, body) = app
        .quant_post("acme/ai/agents/claude/chat", &json!({"message": "1+1?"}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Step 1: 30 + 100 cached + 7 written in, 20 out; step 2: 12 in, 4 out.
    assert_eq!(
        body["response"]["usage"],
        json!({"inputTokens": 149, "outputTokens": 24, "cacheReadTokens": 100, "cacheWriteTokens": 7})
    );
}

#[tokio::test]
async fn thinking_budget_is_sent_and_upstream_errors_stay_private() {
    let mock = anthropic_mock::start().await;
    let app = app_on(
        &mock,
        "thinking_budget_tokens = 2048\ntemperature = 0.5\nmax_tokens = 4096",
    )
    .await;
    let (status, _) = app.say("p", "claude", "think", None).await;
    assert_eq!(status, 200);
    let sent = &mock.received()[0].body;
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    assert!(sent.get("temperature").is_none(), "{sent}");

    mock.push([Reply::Status(400, None)]);
    let (status, body) = app.say("p", "claude", "bad", None).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["type"], "upstream_rejected");
    assert!(!body.to_string().contains("MOCK-UPSTREAM-DETAIL"));
}

#[tokio::test]
async fn tool_choice_and_params_reach_anthropic_in_its_own_spelling() {
    let mock = anthropic_mock::start().await;
    let app = app_on(
        &mock,
        "tools = [\"calculator\"]\ntool_choice = \"calculator\"\ntemperature = 0.5\n\
         [agents.params]\ntop_k = 5\nstop_sequences = [\"END\"]\nmetadata = { user_id = \"u-1\" }\n",
    )
    .await;
    mock.push([
        Reply::Message(tool_message(
            "toolu_01",
            "calculator",
            json!({"expression": "2+2"}),
        )),
        Reply::Message(message("4")),
    ]);
    let (status, body) = app.say("p", "claude", "2+2?", None).await;
    assert_eq!(status, 200, "{body}");
    let received = mock.received();
    let first = &received[0].body;
    assert_eq!(
        first["tool_choice"],
        json!({"type": "tool", "name": "calculator"})
    );
    assert_eq!(first["top_k"], 5);
    assert_eq!(first["stop_sequences"], json!(["END"]));
    assert_eq!(first["metadata"], json!({"user_id": "u-1"}));
    assert_eq!(first["temperature"], 0.5);
    // After the tool's result the model is free to answer.
    assert_eq!(received[1].body["tool_choice"], json!({"type": "auto"}));

    // `params.thinking` turns thinking on like thinking_budget_tokens: no temperature.
    let mock = anthropic_mock::start().await;
    let app = app_on(
        &mock,
        "temperature = 0.5\ntool_choice = \"auto\"\nmax_tokens = 2048\n\
         [agents.params]\nthinking = { type = \"enabled\", budget_tokens = 1024 }\n",
    )
    .await;
    let (status, _) = app.say("p", "claude", "think", None).await;
    assert_eq!(status, 200);
    let sent = &mock.received()[0].body;
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert!(sent.get("temperature").is_none(), "{sent}");
    // No tools are offered, so no tool choice is sent.
    assert!(sent.get("tool_choice").is_none(), "{sent}");
}
