//! Server-side tools end to end: a mock upstream that asks for tools (a real
//! HTTP server speaking the OpenAI wire format) and HTTP tools calling a real
//! local service.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::*;

/// Asks for `calls` until tool results are present (or forever with `endless`),
/// then answers with the tool results it saw.
struct ToolCaller {
    calls: Vec<(&'static str, String)>,
    endless: bool,
}

impl Respond for ToolCaller {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let messages = body["messages"].as_array().unwrap();
        if messages.last().unwrap()["role"] == "tool" && !self.endless {
            let seen: Vec<String> = messages
                .iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect();
            return ResponseTemplate::new(200)
                .set_body_json(completion(&format!("tools said: {}", seen.join(" | "))));
        }
        let n = messages.len();
        let calls: Vec<Value> = self
            .calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| json!({"id": format!("call_{n}_{i}"), "type": "function", "function": {"name": name, "arguments": args}}))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": calls}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2}
        }))
    }
}

pub async fn tool_upstream(calls: Vec<(&'static str, String)>, endless: bool) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ToolCaller { calls, endless })
        .mount(&server)
        .await;
    server
}

fn tools_toml(agent_tools: &str, extra: &str) -> String {
    format!(
        r#"
[[agents]]
id = "tooly"
provider = "up"
model = "gpt-test-model"
tools = [{agent_tools}]
max_steps = 4
{extra}
"#
    )
}

#[tokio::test]
async fn the_model_calls_two_tools_in_one_step_and_answers_with_their_results() {
    let upstream = tool_upstream(
        vec![
            ("calculator", r#"{"expression":"6*7"}"#.into()),
            ("clock", "{}".into()),
        ],
        false,
    )
    .await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: tools_toml(r#""calculator", "clock""#, ""),
        ..Default::default()
    })
    .await;
    let (status, body) = app
        .say("p", "tooly", "what is 6*7 and the time?", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let text = text_of(&body);
    assert!(text.starts_with("tools said: 42 | 20"), "{text}");
    let reasoning = &body["response"]["messages"][0]["reasoning"][0]["data"];
    assert_eq!(reasoning[0]["type"], "toolCall");
    assert_eq!(reasoning[0]["toolCall"]["name"], "calculator");
    assert_eq!(reasoning[0]["toolCall"]["toolType"], "builtin");
    assert_eq!(
        reasoning[0]["toolCall"]["input"],
        json!({"expression": "6*7"})
    );
    assert_eq!(
        reasoning[0]["toolCall"]["result"],
        json!({"content": "42", "isError": false})
    );
    assert_eq!(reasoning[1]["toolCall"]["name"], "clock");

    let bodies = received_bodies(&upstream).await;
    assert_eq!(bodies.len(), 2);
    let offered: Vec<&str> = bodies[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["calculator", "clock"]);
    assert_eq!(
        bodies[0]["tools"][0]["function"]["parameters"]["required"],
        json!(["expression"])
    );
    let second = bodies[1]["messages"].as_array().unwrap();
    // The agent has no system prompt: user, assistant (2 calls), 2 tool results.
    assert_eq!(second[1]["role"], "assistant");
    assert_eq!(second[1]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        second[2],
        json!({"role": "tool", "content": "42", "tool_call_id": "call_1_0"})
    );
    assert_eq!(second.len(), 4);

    // The conversation continues from the cursor with the tool exchange in its history.
    let (status, next) = app
        .say("p", "tooly", "thanks", Some(&cursor_of(&body)))
        .await;
    assert_eq!(status, 200, "{next}");
    let third = &received_bodies(&upstream).await[2]["messages"];
    assert_eq!(
        third.as_array().unwrap().len(),
        6,
        "user, calls, 2 results, answer, user"
    );
}

#[tokio::test]
async fn an_endless_tool_loop_stops_at_the_step_limit_with_a_valid_cursor() {
    let upstream = tool_upstream(vec![("clock", "{}".into())], true).await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: tools_toml(r#""clock""#, ""),
        ..Default::default()
    })
    .await;
    let (status, body) = app.say("p", "tooly", "loop forever", None).await;
    assert_eq!(status, 200, "{body}");
    let msg = &body["response"]["messages"][0];
    assert_eq!(
        msg["data"],
        json!([{"type": "stopReason", "value": "max_steps"}])
    );
    assert!(
        msg["content"]["text"]
            .as_str()
            .unwrap()
            .contains("limit of steps"),
        "{msg}"
    );
    assert_eq!(
        received_bodies(&upstream).await.len(),
        4,
        "max_steps model calls"
    );
    let (status, _) = app
        .say("p", "tooly", "go on", Some(&cursor_of(&body)))
        .await;
    assert_eq!(status, 200);

    let (status, quant) = app
        .quant_post("acme/ai/agents/tooly/chat", &json!({"message": "loop"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(quant["response"]["stopReason"], "max_steps");
    assert_eq!(
        quant["response"]["toolResults"].as_array().unwrap().len(),
        4
    );
    assert_eq!(quant["response"]["toolResults"][0]["toolName"], "clock");
}

/// The "orders" service an HTTP tool calls.
pub async fn orders_service() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/orders/slow$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("late")
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/orders/broken$"))
        .respond_with(ResponseTemplate::new(500).set_body_string("database down"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/orders/huge$"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(5000)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/orders/.+$"))
        .respond_with(|req: &Request| {
            ResponseTemplate::new(200).set_body_string(format!("order at {}", req.url.path()))
        })
        .mount(&server)
        .await;
    server
}

async fn http_tool_app(orders: &MockServer, upstream: &MockServer) -> TestApp {
    let tool = format!(
        r#"
[[tools]]
name = "lookup_order"
kind = "http"
description = "Look up an order by id"
method = "GET"
url = "{}/orders/{{order_id}}"
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string" }}, verbose = {{ type = "boolean" }} }}, required = ["order_id"] }}
headers = {{ authorization = "env:TEST_UPSTREAM_KEY" }}
timeout_ms = 500
max_response_bytes = 1000
"#,
        orders.uri()
    );
    spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: format!("{}{tool}", tools_toml(r#""lookup_order""#, "")),
        ..Default::default()
    })
    .await
}

async fn one_lookup(order_id: &str) -> (TestApp, MockServer, MockServer, Value) {
    let orders = orders_service().await;
    let upstream = tool_upstream(
        vec![(
            "lookup_order",
            json!({"order_id": order_id, "verbose": true}).to_string(),
        )],
        false,
    )
    .await;
    let app = http_tool_app(&orders, &upstream).await;
    let (status, body) = app.say("p", "tooly", "where is my order?", None).await;
    assert_eq!(status, 200, "{body}");
    (app, orders, upstream, body)
}

#[tokio::test]
async fn an_http_tool_calls_the_service_with_encoded_path_values_headers_and_an_idempotency_key() {
    let (app, orders, upstream, body) = one_lookup("a/../b c").await;
    assert_eq!(
        text_of(&body),
        "tools said: order at /orders/a%2F..%2Fb%20c"
    );
    let requests = orders.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.url.query(), Some("verbose=true"));
    assert_eq!(req.headers["authorization"], "sk-test-secret-key-123");
    let key = req.headers["idempotency-key"].to_str().unwrap().to_owned();
    assert_eq!(key.len(), 43, "base64url of a SHA-256");

    // The same question in a new conversation is another operation: another key.
    let _ = upstream;
    let (status, _) = app.say("p", "tooly", "where is my order?", None).await;
    assert_eq!(status, 200);
    let again = orders.received_requests().await.unwrap();
    assert_ne!(
        again[1].headers["idempotency-key"], key,
        "a new conversation gets a new key"
    );
}

#[tokio::test]
async fn a_replayed_turn_sends_the_same_idempotency_key() {
    let orders = orders_service().await;
    let upstream =
        tool_upstream(vec![("lookup_order", r#"{"order_id":"42"}"#.into())], false).await;
    let app = http_tool_app(&orders, &upstream).await;
    let (_, first) = app.say("p", "tooly", "hello", None).await;
    let cursor = cursor_of(&first);
    // An SDK or load-balancer retry replays the same cursor and message.
    app.say("p", "tooly", "look up order 42", Some(&cursor))
        .await;
    app.say("p", "tooly", "look up order 42", Some(&cursor))
        .await;
    let keys: Vec<String> = orders
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[1], keys[2], "replays of one turn share the key");
    assert_ne!(keys[0], keys[1], "another turn has another key");
}

#[tokio::test]
async fn http_tool_failures_reach_the_model_as_tool_errors() {
    for (order, expected) in [
        ("slow", "did not answer within 500 ms"),
        ("broken", "the service answered 500: database down"),
        ("..", "may not be empty"),
    ] {
        let (_, _, _, body) = one_lookup(order).await;
        let call = &body["response"]["messages"][0]["reasoning"][0]["data"][0]["toolCall"];
        assert_eq!(call["result"]["isError"], true, "{order}: {call}");
        assert!(
            call["result"]["content"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{order}: {call}"
        );
    }
    let (_, _, _, body) = one_lookup("huge").await;
    let content = body["response"]["messages"][0]["reasoning"][0]["data"][0]["toolCall"]["result"]
        ["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        content.starts_with(&"x".repeat(1000))
            && content.ends_with("[truncated: the response was longer than 1000 bytes]"),
        "{content}"
    );
}

#[tokio::test]
async fn expose_controls_what_clients_see_of_a_run() {
    let upstream = tool_upstream(
        vec![
            ("calculator", r#"{"expression":"1+1"}"#.into()),
            ("clock", "{}".into()),
        ],
        false,
    )
    .await;
    let extra = r#"
[[tools]]
name = "calculator"
kind = "builtin"
expose = "input"

[[tools]]
name = "clock"
kind = "builtin"
expose = "none"
"#;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: format!("{}{extra}", tools_toml(r#""calculator", "clock""#, "")),
        ..Default::default()
    })
    .await;
    let (_, body) = app.say("p", "tooly", "x", None).await;
    let data = body["response"]["messages"][0]["reasoning"][0]["data"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(data.len(), 1, "clock is not reported");
    assert_eq!(data[0]["toolCall"]["input"], json!({"expression": "1+1"}));
    assert!(data[0]["toolCall"].get("result").is_none());
    let (_, quant) = app
        .quant_post("acme/ai/agents/tooly/chat", &json!({"message": "x"}))
        .await;
    assert_eq!(
        quant["toolResults"],
        json!([{"toolName": "calculator", "toolUseId": "call_1_0", "input": {"expression": "1+1"}}])
    );
}

fn add_action() -> Value {
    json!({"type": "clientTool", "clientTool": {"name": "add", "description": "Add two numbers",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}})
}

async fn client_tool_app(args: &str) -> (TestApp, MockServer) {
    let upstream = tool_upstream(vec![("add", args.into())], false).await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: tools_toml(r#""calculator""#, ""),
        ..Default::default()
    })
    .await;
    (app, upstream)
}

#[tokio::test]
async fn a_client_tool_call_goes_to_the_client_and_its_result_back_to_the_model() {
    let (app, upstream) = client_tool_app(r#"{"a":1,"b":2}"#).await;
    let res = app
        .chat("p", &json!({"agentExternalId": "tooly", "messages": [text_message("1+2?")], "actions": [add_action()]}))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let actions = &body["response"]["messages"][0]["actions"];
    assert_eq!(actions.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(actions[0]["type"], "clientTool");
    assert_eq!(
        actions[0]["clientTool"],
        json!({"name": "add", "arguments": r#"{"a":1,"b":2}"#})
    );
    let action_id = actions[0]["actionId"].as_str().unwrap().to_owned();
    let offered = &received_bodies(&upstream).await[0]["tools"];
    assert_eq!(
        offered[1]["function"]["name"], "add",
        "client tools are offered beside the agent's"
    );
    let cursor = cursor_of(&body);

    // Unanswered, forged or mismatched answers are refused without touching the conversation.
    for (messages, fragment) in [
        (
            json!([text_message("ignore it")]),
            "waiting for the answer to action",
        ),
        (
            json!([{"role": "action", "type": "clientTool", "actionId": "forged", "content": {"type": "text", "text": "3"}, "data": []}]),
            "does not match any action",
        ),
        (
            json!([
                {"role": "action", "type": "clientTool", "actionId": action_id, "content": {"type": "text", "text": "3"}, "data": []},
                {"role": "action", "type": "clientTool", "actionId": action_id, "content": {"type": "text", "text": "4"}, "data": []}
            ]),
            "answered more than once",
        ),
    ] {
        let res = app.chat("p", &json!({"agentExternalId": "tooly", "cursor": cursor, "messages": messages, "actions": [add_action()]})).await;
        assert_eq!(res.status(), 400);
        let err: Value = res.json().await.unwrap();
        assert!(
            err["error"]["message"].as_str().unwrap().contains(fragment),
            "{err}"
        );
    }

    let answer = json!({"role": "action", "type": "clientTool", "actionId": action_id, "content": {"type": "text", "text": "3"}, "data": []});
    let res = app.chat("p", &json!({"agentExternalId": "tooly", "cursor": cursor, "messages": [answer], "actions": [add_action()]})).await;
    assert_eq!(res.status(), 200);
    let done: Value = res.json().await.unwrap();
    assert_eq!(text_of(&done), "tools said: 3");
    assert!(done["response"]["messages"][0].get("actions").is_none());
    let last = received_bodies(&upstream).await;
    let msgs = last.last().unwrap()["messages"].as_array().unwrap().clone();
    assert_eq!(
        msgs.last().unwrap(),
        &json!({"role": "tool", "content": "3", "tool_call_id": "call_1_0"})
    );
}

#[tokio::test]
async fn client_tool_arguments_that_fail_the_schema_go_back_to_the_model() {
    let (app, _upstream) = client_tool_app(r#"{"a":"one"}"#).await;
    let res = app
        .chat("p", &json!({"agentExternalId": "tooly", "messages": [text_message("x")], "actions": [add_action()]}))
        .await;
    let body: Value = res.json().await.unwrap();
    assert!(
        body["response"]["messages"][0].get("actions").is_none(),
        "{body}"
    );
    assert!(
        text_of(&body).starts_with("tools said: the arguments do not match"),
        "{body}"
    );
}

#[tokio::test]
async fn a_client_tool_may_not_shadow_a_server_tool() {
    let (app, _upstream) = client_tool_app("{}").await;
    let res = app
        .chat(
            "p",
            &json!({"agentExternalId": "tooly", "messages": [text_message("x")],
            "actions": [{"type": "clientTool", "clientTool": {"name": "calculator"}}]}),
        )
        .await;
    assert_eq!(res.status(), 400);
}

pub async fn confirm_app(orders: &MockServer, upstream: &MockServer, store: Backend) -> TestApp {
    let tool = format!(
        r#"
[[tools]]
name = "lookup_order"
kind = "http"
description = "Look up an order by id"
url = "{}/orders/{{order_id}}"
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string" }} }}, required = ["order_id"] }}
confirm = true
"#,
        orders.uri()
    );
    spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: format!("{}{tool}", tools_toml(r#""lookup_order""#, "")),
        store,
        ..Default::default()
    })
    .await
}

fn confirmation(action_id: &str, status: &str) -> Value {
    json!({"role": "action", "type": "toolConfirmation", "actionId": action_id, "status": status})
}

/// Send a confirmation answer with `cursor`; return status and the raw body.
async fn answer(app: &TestApp, cursor: &str, action_id: &str, status: &str) -> (u16, String) {
    let res = app
        .chat("p", &json!({"agentExternalId": "tooly", "cursor": cursor, "messages": [confirmation(action_id, status)]}))
        .await;
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Ask, and return the cursor and the confirmation's action id.
async fn ask_for_confirmation(app: &TestApp) -> (String, String) {
    let (status, body) = app.say("p", "tooly", "where is order 7?", None).await;
    assert_eq!(status, 200, "{body}");
    let action = &body["response"]["messages"][0]["actions"][0];
    assert_eq!(action["type"], "toolConfirmation", "{body}");
    (
        cursor_of(&body),
        action["actionId"].as_str().unwrap().to_owned(),
    )
}

async fn confirmation_is_single_use(store: Backend, second: Option<Backend>) {
    let orders = orders_service().await;
    let upstream = tool_upstream(vec![("lookup_order", r#"{"order_id":"7"}"#.into())], false).await;
    let app = confirm_app(&orders, &upstream, store).await;
    let (status, body) = app.say("p", "tooly", "where is order 7?", None).await;
    assert_eq!(status, 200);
    let action = &body["response"]["messages"][0]["actions"][0];
    assert_eq!(
        action["toolConfirmation"],
        json!({
            "content": {"type": "text", "text": "The agent wants to run the tool \"lookup_order\". Do you allow it?"},
            "toolName": "lookup_order", "toolArguments": {"order_id": "7"},
            "toolDescription": "Look up an order by id", "toolType": "callRestApi"
        })
    );
    assert!(
        orders.received_requests().await.unwrap().is_empty(),
        "nothing runs before ALLOW"
    );
    let cursor = cursor_of(&body);
    let id = action["actionId"].as_str().unwrap().to_owned();

    let (status, allowed) = answer(&app, &cursor, &id, "ALLOW").await;
    assert_eq!(status, 200, "{allowed}");
    let v: Value = serde_json::from_str(&allowed).unwrap();
    assert_eq!(text_of(&v), "tools said: order at /orders/7");
    assert_eq!(orders.received_requests().await.unwrap().len(), 1);

    // An SDK retry of the same answer (possibly on another replica) gets the same response.
    let other = match second {
        Some(b) => confirm_app(&orders, &upstream, b).await,
        None => app,
    };
    let (status, again) = answer(&other, &cursor, &id, "ALLOW").await;
    assert_eq!(
        (status, &again),
        (200, &allowed),
        "the same answer repeated returns the same result"
    );
    assert_eq!(
        orders.received_requests().await.unwrap().len(),
        1,
        "the tool ran once"
    );
    let (status, conflict) = answer(&other, &cursor, &id, "DENY").await;
    assert_eq!(status, 409, "{conflict}");
    assert!(conflict.contains("\"type\":\"conflict\""));
}

#[tokio::test]
async fn a_confirmation_is_single_use_on_one_replica() {
    confirmation_is_single_use(Backend::Memory, None).await;
}

#[tokio::test]
async fn a_confirmation_is_single_use_across_replicas_with_redis() {
    let redis = crate::redis_server::RedisServer::start().await;
    let shared = || Backend::Redis {
        url: redis.url(),
        shared_prefix: Some("once".into()),
    };
    confirmation_is_single_use(shared(), Some(shared())).await;
}

#[tokio::test]
async fn deny_reaches_the_model_as_a_refusal_and_nothing_runs() {
    let orders = orders_service().await;
    let upstream = tool_upstream(vec![("lookup_order", r#"{"order_id":"7"}"#.into())], false).await;
    let app = confirm_app(&orders, &upstream, Backend::Memory).await;
    let (cursor, id) = ask_for_confirmation(&app).await;
    let (status, body) = answer(&app, &cursor, &id, "DENY").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(text_of(&v), "tools said: the user refused to run this tool");
    assert!(orders.received_requests().await.unwrap().is_empty());
    // A forged or mistyped answer is refused.
    let (status, _) = answer(&app, &cursor, "forged", "ALLOW").await;
    assert_eq!(status, 400);
    let res = app
        .chat("p", &json!({"agentExternalId": "tooly", "cursor": cursor, "messages": [{"role": "action", "type": "clientTool", "actionId": id, "content": {"type": "text", "text": "x"}}]}))
        .await;
    assert_eq!(res.status(), 400);
    // The Quant API cannot ask for confirmations: the tool fails instead of running.
    let (status, quant) = app
        .quant_post("acme/ai/agents/tooly/chat", &json!({"message": "order 7?"}))
        .await;
    assert_eq!(status, 200);
    assert!(
        quant["response"]["text"]
            .as_str()
            .unwrap()
            .contains("needs the user's confirmation"),
        "{quant}"
    );
    assert!(orders.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_turn_past_its_deadline_answers_200_with_a_deadline_stop_and_a_valid_cursor() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("too late"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&upstream)
        .await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: tools_toml(r#""clock""#, "max_turn_seconds = 1"),
        ..Default::default()
    })
    .await;
    let (status, body) = app.say("p", "tooly", "hurry", None).await;
    assert_eq!(status, 200, "{body}");
    let msg = &body["response"]["messages"][0];
    assert_eq!(
        msg["data"],
        json!([{"type": "stopReason", "value": "deadline"}])
    );
    assert!(
        msg["content"]["text"]
            .as_str()
            .unwrap()
            .contains("ran out of time")
    );
    let (status, quant) = app
        .quant_post("acme/ai/agents/tooly/chat", &json!({"message": "hurry"}))
        .await;
    assert_eq!(
        (status, quant["response"]["stopReason"].as_str()),
        (200, Some("deadline"))
    );
    // The cursor is valid: the next turn opens it (and stops at the deadline again).
    let (status, _) = app
        .say("p", "tooly", "again", Some(&cursor_of(&body)))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_arguments_and_unknown_tools_from_the_upstream_become_tool_errors() {
    let upstream = tool_upstream(
        vec![
            ("calculator", "{broken".into()),
            ("calculator", r#"{"expression": 5}"#.into()),
            ("format_disk", "{}".into()),
        ],
        false,
    )
    .await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: tools_toml(r#""calculator""#, ""),
        ..Default::default()
    })
    .await;
    let (status, body) = app.say("p", "tooly", "x", None).await;
    assert_eq!(status, 200, "{body}");
    let seen: Vec<String> = received_bodies(&upstream).await[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[0].starts_with("the arguments are not valid JSON"),
        "{seen:?}"
    );
    assert!(
        seen[1].starts_with("the arguments do not match the tool's schema"),
        "{seen:?}"
    );
    assert!(
        seen[2].starts_with("unknown tool \"format_disk\""),
        "{seen:?}"
    );
    let calls = &body["response"]["messages"][0]["reasoning"][0]["data"];
    assert!(
        calls
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["toolCall"]["result"]["isError"] == true)
    );
}

#[tokio::test]
async fn a_template_keeps_its_static_query_and_may_use_a_placeholder_twice() {
    let orders = orders_service().await;
    let upstream =
        tool_upstream(vec![("lookup_order", r#"{"order_id":"42"}"#.into())], false).await;
    let tool = format!(
        r#"
[[tools]]
name = "lookup_order"
kind = "http"
method = "GET"
url = "{}/orders/{{order_id}}/copy/{{order_id}}?api-version=2024-06"
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string" }} }}, required = ["order_id"] }}
"#,
        orders.uri()
    );
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: format!("{}{tool}", tools_toml(r#""lookup_order""#, "")),
        ..Default::default()
    })
    .await;
    let (status, body) = app.say("p", "tooly", "order 42?", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(text_of(&body), "tools said: order at /orders/42/copy/42");
    let requests = orders.received_requests().await.unwrap();
    assert_eq!(requests[0].url.query(), Some("api-version=2024-06"));
}

/// A model that asks for `lookup_order` 7, then (second call) fails with a
/// 500 or, with `trickle`, streams dots slowly for a minute; then answers.
async fn claim_app(trickle: bool) -> (TestApp, crate::hostile::RawUpstream) {
    use crate::hostile::{RawUpstream, Script, http};
    let ask = json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"7\"}"}}
        ]}, "finish_reason": "tool_calls"}]
    });
    let json_ok = |v: &Value| {
        http(
            "200 OK",
            &[("content-type", "application/json")],
            &v.to_string(),
        )
    };
    let second = if trickle {
        let dot = json!({"choices": [{"delta": {"content": "."}}]});
        Script::Trickle {
            piece: format!("data: {dot}\n\n").into_bytes(),
            every_ms: 50,
            count: 1200,
        }
    } else {
        Script::Bytes(http("500 Internal Server Error", &[], ""))
    };
    let up = RawUpstream::start(Script::Nth(vec![
        Script::Bytes(json_ok(&ask)),
        second,
        Script::Bytes(json_ok(&completion("tools said: order at /orders/7"))),
    ]))
    .await;
    let orders = orders_service().await;
    let tool = format!(
        r#"
[[tools]]
name = "lookup_order"
kind = "http"
url = "{}/orders/{{order_id}}"
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string" }} }}, required = ["order_id"] }}
confirm = true
"#,
        orders.uri()
    );
    let app = spawn_app_with(Options {
        upstream: Some(up.base.clone()),
        extra_toml: format!("{}{tool}", tools_toml(r#""lookup_order""#, "")),
        ..Default::default()
    })
    .await;
    (app, up)
}

/// Answer until the claim of an abandoned attempt has been given back
/// (bounded): "being answered by another request" is the only 409 allowed.
async fn answer_once_released(app: &TestApp, cursor: &str, id: &str) -> (u16, String) {
    for _ in 0..200 {
        let (status, body) = answer(app, cursor, id, "ALLOW").await;
        if !(status == 409 && body.contains("being answered by another request")) {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the confirmation claim was never released");
}

#[tokio::test]
async fn a_streamed_confirmation_answer_that_failed_upstream_can_be_retried() {
    let (app, _up) = claim_app(false).await;
    let (cursor, id) = ask_for_confirmation(&app).await;
    let res = app
        .chat("p", &json!({"agentExternalId": "tooly", "cursor": cursor, "stream": true, "messages": [confirmation(&id, "ALLOW")]}))
        .await;
    assert_eq!(res.status(), 200);
    let events = crate::streaming::read_events(res).await;
    let last = events.last().unwrap();
    assert_eq!(
        last.name, "error",
        "the model call after the tool failed: {events:?}"
    );
    // Released (by the dropped guard, in the background): the retry runs
    // the turn instead of getting 409.
    let (status, body) = answer_once_released(&app, &cursor, &id).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(text_of(&v), "tools said: order at /orders/7");
}

#[tokio::test]
async fn a_confirmation_answer_whose_client_went_away_can_be_retried() {
    let (app, up) = claim_app(true).await;
    let (cursor, id) = ask_for_confirmation(&app).await;
    let res = app
        .chat("p", &json!({"agentExternalId": "tooly", "cursor": cursor, "stream": true, "messages": [confirmation(&id, "ALLOW")]}))
        .await;
    assert_eq!(res.status(), 200);
    // Inside the slow model call: hang up.
    up.wait_hits(2).await;
    let mut stream = res.bytes_stream();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut stream),
    )
    .await;
    drop(stream);
    let (status, body) = answer_once_released(&app, &cursor, &id).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(text_of(&v), "tools said: order at /orders/7");
}

#[tokio::test]
async fn tool_choice_and_params_are_sent_as_configured_and_nothing_else() {
    let upstream = tool_upstream(
        vec![("calculator", r#"{"expression":"2+3"}"#.into())],
        false,
    )
    .await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: tools_toml(
            r#""calculator""#,
            "tool_choice = \"required\"\n\
             [agents.params]\ntop_p = 0.25\nseed = 42\nstop = [\"END\"]\nreasoning_effort = \"low\"\n\
             parallel_tool_calls = false\n\
             response_format = { type = \"json_schema\", json_schema = { name = \"answer\", \
             schema = { type = \"object\", properties = { a = { type = \"string\" } } } } }\n",
        ),
        ..Default::default()
    })
    .await;
    let (status, body) = app.say("p", "tooly", "2+3?", None).await;
    assert_eq!(status, 200, "{body}");
    let bodies = received_bodies(&upstream).await;
    assert_eq!(bodies.len(), 2);
    let first = &bodies[0];
    assert_eq!(first["tool_choice"], "required");
    assert_eq!(first["top_p"], 0.25);
    assert_eq!(first["seed"], 42);
    assert_eq!(first["stop"], json!(["END"]));
    assert_eq!(first["reasoning_effort"], "low");
    assert_eq!(first["parallel_tool_calls"], false);
    assert_eq!(
        first["response_format"]["json_schema"]["schema"]["properties"]["a"],
        json!({"type": "string"})
    );
    // The call after the tool's result answers the user: `auto`, or the model
    // could only call tools until the turn ran out of steps.
    assert_eq!(bodies[1]["tool_choice"], "auto");
    assert_eq!(bodies[1]["seed"], 42);
    assert!(text_of(&body).starts_with("tools said: 5"), "{body}");

    // An agent that sets neither sends neither, and the plain agent on the
    // same provider is untouched.
    let (status, _) = app.say("p", "gpt", "hello", None).await;
    assert_eq!(status, 200);
    let plain = received_bodies(&upstream).await.pop().unwrap();
    let keys: Vec<&str> = plain
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["max_tokens", "messages", "model", "stream", "temperature"]
    );
}

#[tokio::test]
async fn a_tool_named_by_tool_choice_is_forced_in_the_openai_shape() {
    let upstream = tool_upstream(vec![("clock", "{}".into())], false).await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: tools_toml(r#""calculator", "clock""#, "tool_choice = \"clock\"\n"),
        ..Default::default()
    })
    .await;
    let (status, _) = app.say("p", "tooly", "time?", None).await;
    assert_eq!(status, 200);
    let bodies = received_bodies(&upstream).await;
    assert_eq!(
        bodies[0]["tool_choice"],
        json!({"type": "function", "function": {"name": "clock"}})
    );
    assert_eq!(bodies[1]["tool_choice"], "auto");
}
