//! MCP tools end to end: a real MCP server (rmcp's server side over
//! streamable HTTP), a mock model upstream that asks for its tools, and the
//! gateway in between.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;
use crate::mcp_server::{LONG, McpServer};
use crate::tools::tool_upstream;

fn mcp_toml(server: &McpServer, extra: &str) -> String {
    format!(
        r#"
[[tools]]
name = "kb"
kind = "mcp"
url = "{url}"
headers = {{ authorization = "env:TEST_UPSTREAM_KEY" }}
timeout_ms = 2000
{extra}

[[agents]]
id = "tooly"
provider = "up"
model = "gpt-test-model"
tools = ["kb"]
max_steps = 4
"#,
        url = server.url
    )
}

/// An app whose model calls `calls` (exposed names) once, then answers.
async fn app_calling(
    server: &McpServer,
    calls: Vec<(&'static str, String)>,
    extra: &str,
) -> (TestApp, wiremock::MockServer) {
    let upstream = tool_upstream(calls, false).await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: mcp_toml(server, extra),
        ..Default::default()
    })
    .await;
    (app, upstream)
}

fn offered(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn discovered_tools_are_offered_by_prefixed_names_and_calls_reach_the_server() {
    let server = McpServer::start().await;
    let allow = format!(r#"allow = ["add", "fail", "broken", "slow", "{LONG}"]"#);
    let (app, upstream) = app_calling(
        &server,
        vec![("kb__add", r#"{"a": 2, "b": 3.5}"#.into())],
        &allow,
    )
    .await;
    let (status, body) = app.say("p", "tooly", "2 + 3.5?", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(text_of(&body), "tools said: 5.5");

    let bodies = received_bodies(&upstream).await;
    let names = offered(&bodies[0]);
    let long = names
        .iter()
        .find(|n| n.starts_with("kb__summarise"))
        .unwrap();
    assert_eq!(long.len(), 64, "{long}");
    assert_eq!(
        names,
        [
            "kb__add",
            "kb__broken",
            "kb__fail",
            "kb__slow",
            long.as_str()
        ]
    );
    for n in &names {
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
    }
    let add = &bodies[0]["tools"][0]["function"];
    assert_eq!(add["description"], "Add two numbers");
    assert_eq!(add["parameters"]["required"], json!(["a", "b"]));

    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "add");
    assert_eq!(calls[0].1, json!({"a": 2, "b": 3.5}));
    assert_eq!(
        calls[0].2.as_deref(),
        Some("sk-test-secret-key-123"),
        "env: header values reach the server"
    );
    let report = &body["response"]["messages"][0]["reasoning"][0]["data"][0]["toolCall"];
    assert_eq!(report["name"], "kb__add");
    assert_eq!(report["toolType"], "mcp");
    assert_eq!(
        report["result"],
        json!({"content": "5.5", "isError": false})
    );

    // The long-named tool is called by its exposed name and reaches the server by its own.
    let (app, _upstream) = app_calling(&server, vec![(leak(long), "{}".into())], &allow).await;
    let (status, body) = app.say("p", "tooly", "revenue?", None).await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&body), "tools said: revenue is up");
    assert_eq!(server.calls().last().unwrap().0, LONG);
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

#[tokio::test]
async fn tool_errors_and_protocol_errors_go_back_to_the_model() {
    let server = McpServer::start().await;
    let (app, _upstream) = app_calling(
        &server,
        vec![("kb__fail", "{}".into()), ("kb__broken", "{}".into())],
        "",
    )
    .await;
    let (status, body) = app.say("p", "tooly", "try", None).await;
    assert_eq!(status, 200, "{body}");
    let text = text_of(&body);
    assert!(
        text.starts_with("tools said: the database is on fire | MCP error -32603: kaput"),
        "{text}"
    );
    let data = &body["response"]["messages"][0]["reasoning"][0]["data"];
    assert_eq!(data[0]["toolCall"]["result"]["isError"], true);
    assert_eq!(data[1]["toolCall"]["result"]["isError"], true);
}

#[tokio::test]
async fn a_slow_tool_hits_its_timeout() {
    let server = McpServer::start().await;
    let (app, _upstream) =
        app_calling(&server, vec![("kb__slow", r#"{"ms": 10000}"#.into())], "").await;
    // The tool would answer after 10 s; the message says the 2 s timeout fired.
    let (status, body) = app.say("p", "tooly", "wait", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        text_of(&body),
        "tools said: the tool did not answer within 2000 ms"
    );
}

#[tokio::test]
async fn an_expired_session_is_reinitialised_once_and_the_call_retried() {
    let server = McpServer::start().await;
    let (app, _upstream) =
        app_calling(&server, vec![("kb__add", r#"{"a": 1, "b": 1}"#.into())], "").await;
    let (status, body) = app.say("p", "tooly", "1+1", None).await;
    assert_eq!((status, text_of(&body).as_str()), (200, "tools said: 2"));
    assert!(server.expire_sessions().await >= 1);

    let (status, body) = app.say("p", "tooly", "1+1 again", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(text_of(&body), "tools said: 2", "the call went through");
    let adds = server.calls().iter().filter(|c| c.0 == "add").count();
    assert_eq!(adds, 2, "called once per turn, after a new session");
    assert!(server.session_count().await >= 1, "a new session was made");
}

#[tokio::test]
async fn the_allow_list_hides_tools_and_calls_to_others_are_refused() {
    let server = McpServer::start().await;
    let (app, upstream) = app_calling(
        &server,
        vec![("kb__secret", "{}".into())],
        r#"allow = ["add"]"#,
    )
    .await;
    let (status, body) = app.say("p", "tooly", "tell me", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(text_of(&body).contains("unknown tool"), "{body}");
    assert_eq!(offered(&received_bodies(&upstream).await[0]), ["kb__add"]);
    assert!(server.calls().is_empty(), "the server was never asked");
}

/// Wait (bounded) until the app offers `name` to agent `tooly`.
async fn wait_offered(app: &TestApp, name: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let names: Vec<String> = app
            .state
            .catalog()
            .tools
            .offered(&["kb".to_owned()])
            .iter()
            .map(|t| t.spec().name.clone())
            .collect();
        if names.iter().any(|n| n == name) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn list_changes_are_picked_up_when_announced_and_on_the_refresh_interval() {
    // Announced: a long refresh interval, so only the notification can explain it.
    let server = McpServer::start().await;
    let (app, upstream) = app_calling(
        &server,
        vec![("kb__multiply", r#"{"a": 6, "b": 7}"#.into())],
        "refresh_seconds = 3600",
    )
    .await;
    assert!(wait_offered(&app, "kb__add", Duration::from_secs(5)).await);
    let lists = server.lists();
    server.add_multiply(true).await;
    assert!(
        wait_offered(&app, "kb__multiply", Duration::from_secs(5)).await,
        "the list_changed notification triggers a discovery"
    );
    assert!(server.lists() > lists);
    let (status, body) = app.say("p", "tooly", "6*7", None).await;
    assert_eq!((status, text_of(&body).as_str()), (200, "tools said: 42"));
    assert!(offered(&received_bodies(&upstream).await[0]).contains(&"kb__multiply".to_owned()));

    // Not announced: the refresh interval finds it.
    let server = McpServer::start().await;
    let (app, _upstream) = app_calling(&server, vec![], "refresh_seconds = 1").await;
    assert!(wait_offered(&app, "kb__add", Duration::from_secs(5)).await);
    server.add_multiply(false).await;
    assert!(
        wait_offered(&app, "kb__multiply", Duration::from_secs(5)).await,
        "rediscovered within the interval"
    );
}

#[tokio::test]
async fn confirm_and_expose_apply_to_mcp_tools() {
    let server = McpServer::start().await;
    let (app, _upstream) = app_calling(
        &server,
        vec![("kb__add", r#"{"a": 1, "b": 2}"#.into())],
        "confirm = true\nexpose = \"input\"",
    )
    .await;
    let (status, body) = app.say("p", "tooly", "1+2?", None).await;
    assert_eq!(status, 200, "{body}");
    let action = &body["response"]["messages"][0]["actions"][0];
    assert_eq!(action["type"], "toolConfirmation", "{body}");
    assert_eq!(action["toolConfirmation"]["toolName"], "kb__add");
    assert_eq!(action["toolConfirmation"]["toolType"], "mcp");
    assert_eq!(
        action["toolConfirmation"]["toolDescription"],
        "Add two numbers"
    );
    assert!(
        server.calls().is_empty(),
        "nothing runs before the user allows it"
    );

    let answer = json!({
        "agentExternalId": "tooly",
        "cursor": cursor_of(&body),
        "messages": [{"role": "action", "type": "toolConfirmation", "actionId": action["actionId"], "status": "ALLOW"}]
    });
    let res = app.chat("p", &answer).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(text_of(&body), "tools said: 3");
    assert_eq!(server.calls().len(), 1);
    let report = &body["response"]["messages"][0]["reasoning"][0]["data"][0]["toolCall"];
    assert_eq!(report["input"], json!({"a": 1, "b": 2}));
    assert!(
        report.get("result").is_none(),
        "expose = input hides the result"
    );
}

#[tokio::test]
async fn an_unreachable_mcp_server_costs_one_bounded_wait_and_no_failed_turns() {
    // Held until the test ends, so that no other test's server can take the port.
    let (_reserved, port) = refused_port();
    let upstream = tool_upstream(vec![("kb__add", "{}".into())], false).await;
    let toml = format!(
        r#"
[[tools]]
name = "kb"
kind = "mcp"
url = "http://127.0.0.1:{port}/mcp"
timeout_ms = 1000

[[agents]]
id = "tooly"
provider = "up"
model = "gpt-test-model"
tools = ["kb"]
"#
    );
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: toml,
        ..Default::default()
    })
    .await;
    // Bounded by the 1 s timeout; the generous bound here only catches a hang.
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(30), app.say("p", "tooly", "add", None))
            .await
            .expect("the turn does not hang on an unreachable server");
    assert_eq!(status, 200, "{body}");
    assert!(text_of(&body).contains("unknown tool"), "{body}");
    assert!(offered(&received_bodies(&upstream).await[0]).is_empty());
}
