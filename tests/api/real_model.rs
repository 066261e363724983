//! End to end against a real model: SmolLM2-135M served by llama.cpp's
//! llama-server, which `scripts/real-model.sh start` runs and the test command
//! names in `AGENTGATE_REAL_MODEL_URL`. These tests are ignored by a plain
//! `cargo test`; `scripts/test.sh` runs them with `--ignored` once the server
//! is up. Answers are deterministic (temperature 0) but not asserted word for
//! word: what is checked is what the gateway owes, whatever the model says.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::streaming::read_events;

fn model_url() -> String {
    std::env::var("AGENTGATE_REAL_MODEL_URL")
        .expect("AGENTGATE_REAL_MODEL_URL: start the server with scripts/real-model.sh start")
}

/// Two agents on the real model: `small` chats, `caller` must call a tool.
async fn app() -> TestApp {
    spawn_app_with(Options {
        extra_toml: format!(
            r#"
[[providers]]
name = "llama"
kind = "openai"
base_url = "{url}"
max_retries = 1
first_byte_timeout_ms = 120000
total_timeout_ms = 300000

[[agents]]
id = "small"
provider = "llama"
model = "smollm2-135m"
system_prompt = "You are a helpful assistant."
temperature = 0.0
max_tokens = 48
max_turn_seconds = 600

[[agents]]
id = "caller"
provider = "llama"
model = "smollm2-135m"
system_prompt = "You are a function calling AI model."
temperature = 0.0
max_tokens = 100
max_turn_seconds = 600
tool_choice = "required"
[agents.params]
seed = 7
"#,
            url = model_url()
        ),
        ..Default::default()
    })
    .await
}

fn weather_action() -> Value {
    json!({"type": "clientTool", "clientTool": {
        "name": "get_weather", "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

#[tokio::test]
#[ignore = "needs a real model: scripts/test.sh starts one (scripts/real-model.sh)"]
async fn a_real_model_holds_a_conversation_through_the_cursor_and_a_session() {
    let app = app().await;
    let mut cursor: Option<String> = None;
    let mut sizes: Vec<usize> = Vec::new();
    for question in [
        "What is the capital of France? Answer in one sentence.",
        "And what is the capital of Germany?",
        "Thank you. Say goodbye in three words.",
    ] {
        let (status, body) = app.say("p", "small", question, cursor.as_deref()).await;
        assert_eq!(status, 200, "{body}");
        assert!(!text_of(&body).trim().is_empty(), "an answer: {body}");
        let next = cursor_of(&body);
        sizes.push(next.len());
        cursor = Some(next);
    }
    // The whole conversation travels in the cursor: the last one holds all
    // three questions and answers.
    assert!(sizes.windows(2).all(|w| w[1] >= w[0]), "{sizes:?}");
    let ctx = agentgate::cursor::CursorContext {
        project: "p",
        agent: "small",
        subject: "anonymous",
    };
    let state = app
        .state
        .codec
        .open(
            cursor.as_deref().unwrap(),
            &ctx,
            agentgate::clock::Clock::now(&app.clock),
        )
        .expect("the gateway opens its own cursor");
    assert_eq!(state.turn, 3);
    assert_eq!(state.history.len(), 6, "{:?}", state.history);

    // The Quant API: the session sends the history, so the model reads more each turn.
    let (status, one) = app
        .quant_post(
            "acme/ai/agents/small/chat",
            &json!({"message": "Name a colour.", "userId": "u1"}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let (status, two) = app
        .quant_post(
            "acme/ai/agents/small/chat",
            &json!({"message": "Name another one.", "userId": "u1", "sessionId": one["sessionId"]}),
        )
        .await;
    assert_eq!(status, 200, "{two}");
    let input = |v: &Value| v["response"]["usage"]["inputTokens"].as_u64().unwrap();
    assert!(input(&two) > input(&one), "{one} then {two}");
}

#[tokio::test]
#[ignore = "needs a real model: scripts/test.sh starts one (scripts/real-model.sh)"]
async fn a_real_model_streams_its_answer_in_pieces_on_both_apis() {
    let app = app().await;
    let res = app
        .chat(
            "p",
            &json!({"agentExternalId": "small", "stream": true,
                    "messages": [text_message("Say hello in three words.")]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let events = read_events(res).await;
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e.name == "delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert!(
        deltas.len() >= 2,
        "the answer arrives in pieces: {deltas:?}"
    );
    let done = &events.last().unwrap().data;
    assert_eq!(events.last().unwrap().name, "done", "{events:?}");
    assert_eq!(text_of(done), deltas.concat());
    // The streamed turn's cursor continues the conversation.
    let (status, _) = app
        .say("p", "small", "Again, please.", Some(&cursor_of(done)))
        .await;
    assert_eq!(status, 200);

    let res = app
        .client
        .post(app.quant("acme/ai/agents/small/chat"))
        .json(&json!({"message": "Count to three.", "userId": "u1", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = read_events(res).await;
    let pieces = events.iter().filter(|e| e.name == "delta").count();
    assert!(pieces >= 2, "{events:?}");
    assert_eq!(events.last().unwrap().name, "done");
}

#[tokio::test]
#[ignore = "needs a real model: scripts/test.sh starts one (scripts/real-model.sh)"]
async fn a_real_model_calls_a_client_tool_when_the_agent_requires_one() {
    let app = app().await;
    for stream in [false, true] {
        let body = json!({"agentExternalId": "caller", "stream": stream,
            "messages": [text_message("Call get_weather for Paris. Reply with JSON only.")],
            "actions": [weather_action()]});
        let res = app.chat("p", &body).await;
        assert_eq!(res.status(), 200);
        let done = if stream {
            let events = read_events(res).await;
            assert_eq!(events.last().unwrap().name, "done", "{events:?}");
            events.last().unwrap().data.clone()
        } else {
            res.json().await.unwrap()
        };
        let actions = &done["response"]["messages"][0]["actions"];
        assert_eq!(actions[0]["type"], "clientTool", "stream={stream}: {done}");
        assert_eq!(actions[0]["clientTool"]["name"], "get_weather");
        // The small model writes its own spacing: parse, don't compare text.
        let arguments: Value =
            serde_json::from_str(actions[0]["clientTool"]["arguments"].as_str().unwrap()).unwrap();
        assert!(
            arguments["city"].as_str().is_some_and(|c| !c.is_empty()),
            "{arguments}"
        );
    }
}
