//! The error table: validation errors, upstream failure classes, exact bodies.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

async fn post_raw(app: &TestApp, body: &str) -> (u16, String) {
    let res = app
        .client
        .post(app.chat_url("p"))
        .header("content-type", "application/json")
        .header("x-request-id", "req-1")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn invalid_requests_get_cognite_error_bodies() {
    let app = spawn_app().await;
    let msg = |t: &str| text_message(t);
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"messages": [msg("x")]}),
            400,
            "invalid_request",
            "agentExternalId is required",
        ),
        (
            json!({"agentExternalId": "echo"}),
            400,
            "invalid_request",
            "messages is required",
        ),
        (
            json!({"agentExternalId": "echo", "messages": []}),
            400,
            "invalid_request",
            "1 to 1000",
        ),
        (
            json!({"agentExternalId": "echo", "messages": vec![msg("x"); 1001]}),
            400,
            "invalid_request",
            "got 1001",
        ),
        (
            json!({"agentExternalId": "", "messages": [msg("x")]}),
            400,
            "invalid_request",
            "1 to 128",
        ),
        (
            json!({"agentExternalId": "a".repeat(129), "messages": [msg("x")]}),
            400,
            "invalid_request",
            "1 to 128",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [{"role": "user", "content": {"type": "audio", "data": "x"}}]}),
            400,
            "invalid_request",
            "\"audio\"",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [{"role": "user", "content": {"type": "image", "mediaType": "image/gif", "data": "R0lG"}}]}),
            400,
            "invalid_request",
            "image/gif",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [{"role": "user", "content": {"type": "image", "mediaType": "image/png", "data": "***"}}]}),
            400,
            "invalid_request",
            "base64",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [{"role": "assistant", "content": {"type": "text", "text": "x"}}]}),
            400,
            "invalid_request",
            "\"assistant\"",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [{"role": "action", "type": "clientTool", "actionId": "a", "content": {"type": "text", "text": "3"}, "data": []}]}),
            400,
            "invalid_request",
            "does not match any action",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [msg("x")], "actions": (0..11).map(|i| json!({"type": "clientTool", "clientTool": {"name": format!("t{i}")}})).collect::<Vec<_>>()}),
            400,
            "invalid_request",
            "at most 10 actions",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [msg("x")], "actions": [{"type": "clientTool", "clientTool": {"name": "bad name"}}]}),
            400,
            "invalid_request",
            "must match",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [msg("x")], "actions": [{"type": "clientTool", "clientTool": {"name": "f", "parameters": {"type": "string"}}}]}),
            400,
            "invalid_request",
            "JSON Schema for an object",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [{"role": "action", "type": "userSession", "actionId": "a", "nonce": "n"}]}),
            400,
            "actions_not_supported",
            "\"userSession\"",
        ),
        (
            json!({"agentExternalId": "echo", "messages": [msg("x")], "cursor": 5}),
            400,
            "invalid_request",
            "not valid JSON",
        ),
    ];
    for (body, status, kind, fragment) in cases {
        let res = app.chat("p", &body).await;
        assert_eq!(res.status().as_u16(), status, "{body}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["type"], kind, "{body}");
        assert_eq!(v["error"]["code"], status);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(fragment),
            "{v}"
        );
        assert!(
            v["error"]["requestId"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
    }
    let tiny_png = "iVBORw0KGgo=";
    let many: Vec<Value> = (0..21)
        .map(|_| json!({"type": "image", "mediaType": "image/png", "data": tiny_png}))
        .collect();
    let res = app
        .chat(
            "p",
            &json!({"agentExternalId": "echo", "messages": [{"role": "user", "content": many}]}),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("at most 20 images"));
}

#[tokio::test]
async fn exact_error_bodies_are_pinned() {
    let app = spawn_app().await;
    let (status, body) = post_raw(&app, "{not json").await;
    assert_eq!(status, 400);
    insta::assert_snapshot!(body, @r#"{"error":{"code":400,"message":"the request body is not valid JSON for this API: key must be a string at line 1 column 2","type":"invalid_request","requestId":"req-1"}}"#);
    let (status, body) = post_raw(&app, r#"{"agentExternalId":"missing","messages":[{"role":"user","content":{"type":"text","text":"x"}}]}"#).await;
    assert_eq!(status, 404);
    insta::assert_snapshot!(body, @r#"{"error":{"code":404,"message":"agent \"missing\" not found","type":"agent_not_found","requestId":"req-1","missing":[{"externalId":"missing"}]}}"#);
    let (status, body) = post_raw(&app, r#"{"agentExternalId":"echo","messages":[{"role":"action","type":"userSession","actionId":"a","nonce":"n"}]}"#).await;
    assert_eq!(status, 400);
    insta::assert_snapshot!(body, @r#"{"error":{"code":400,"message":"messages[0]: \"userSession\" action results are not supported by this gateway","type":"actions_not_supported","requestId":"req-1"}}"#);
}

/// An upstream answering every call with `template`.
async fn failing_upstream(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

async fn status_for(
    template: ResponseTemplate,
    provider_toml: &str,
) -> (u16, Option<String>, String, usize) {
    let upstream = failing_upstream(template).await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        provider_toml: provider_toml.into(),
        ..Default::default()
    })
    .await;
    let res = app
        .client
        .post(app.chat_url("p"))
        .header("x-request-id", "req-up")
        .json(&json!({"agentExternalId": "gpt", "messages": [text_message("hi")]}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.text().await.unwrap();
    let calls = upstream.received_requests().await.unwrap().len();
    (status, retry_after, body, calls)
}

#[tokio::test]
async fn each_upstream_failure_class_maps_to_its_status_without_leaking_the_upstream_body() {
    let leak = r#"{"error":{"message":"UPSTREAM-SECRET-DETAIL sk-live-123"}}"#;
    for (upstream_status, want, kind) in [
        (400, 422, "upstream_rejected"),
        (422, 422, "upstream_rejected"),
        (401, 500, "provider_misconfigured"),
        (403, 500, "provider_misconfigured"),
        (404, 500, "provider_misconfigured"),
        (408, 502, "upstream_error"),
        (500, 502, "upstream_error"),
        (501, 502, "upstream_error"),
        (502, 502, "upstream_error"),
        (503, 503, "upstream_unavailable"),
        (504, 502, "upstream_error"),
        (529, 503, "upstream_unavailable"),
    ] {
        let (status, _, body, _) = status_for(
            ResponseTemplate::new(upstream_status).set_body_string(leak),
            "",
        )
        .await;
        assert_eq!(status, want, "upstream {upstream_status}: {body}");
        assert!(body.contains(&format!("\"type\":\"{kind}\"")), "{body}");
        assert!(
            !body.contains("UPSTREAM-SECRET") && !body.contains("sk-"),
            "{body}"
        );
    }
    let (status, retry_after, body, _) = status_for(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "7")
            .set_body_string(leak),
        "",
    )
    .await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("7")));
    insta::assert_snapshot!(body, @r#"{"error":{"code":429,"message":"the model provider is rate limiting requests; retry later","type":"upstream_rate_limited","requestId":"req-up"}}"#);

    let (status, _, body, _) = status_for(
        ResponseTemplate::new(200).set_body_string("<html>oops</html>"),
        "",
    )
    .await;
    assert_eq!(status, 502, "{body}");
}

#[tokio::test]
async fn server_errors_are_retried_up_to_max_retries() {
    let (status, retry_after, _, calls) =
        status_for(ResponseTemplate::new(503), "max_retries = 2").await;
    assert_eq!((status, calls), (503, 3));
    assert_eq!(
        retry_after.as_deref(),
        Some("1"),
        "503 always says when to retry"
    );
    let (status, _, _, calls) = status_for(ResponseTemplate::new(500), "max_retries = 2").await;
    assert_eq!((status, calls), (502, 3));
    let (status, _, _, calls) = status_for(ResponseTemplate::new(501), "max_retries = 2").await;
    assert_eq!((status, calls), (502, 1), "501 is not retried");
    let (status, _, _, calls) = status_for(ResponseTemplate::new(400), "max_retries = 2").await;
    assert_eq!((status, calls), (422, 1), "client errors are not retried");
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504() {
    let (status, _, body, _) = status_for(
        ResponseTemplate::new(200)
            .set_body_json(completion("late"))
            .set_delay(Duration::from_secs(3)),
        "first_byte_timeout_ms = 300",
    )
    .await;
    assert_eq!(status, 504, "{body}");
    insta::assert_snapshot!(body, @r#"{"error":{"code":504,"message":"the model provider did not answer in time","type":"upstream_timeout","requestId":"req-up"}}"#);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // Held until the test ends, so that no other test's server can take the port.
    let (_reserved, port) = refused_port();
    let app = spawn_app_with(Options {
        upstream: Some(format!("http://127.0.0.1:{port}/v1")),
        ..Default::default()
    })
    .await;
    let (status, body) = app.say("p", "gpt", "hi", None).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (502, Some("upstream_error"))
    );
}
