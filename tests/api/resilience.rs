//! Upstreams failing in every way, against the mock Messages API: stalls
//! before the first byte and between chunks, death mid-stream, 429 with
//! Retry-After, 529, in-stream overload, a Retry-After longer than the
//! deadline, fallback to a second provider, the circuit breaker.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::anthropic_mock::{
    self, Fault, Mock, Reply, agent_toml, message, provider_toml, tool_message,
};
use crate::helpers::*;
use crate::streaming::{Event, read_events};

/// An app whose agent `claude` uses provider `a` (on `mock`) with `provider`
/// keys, and `agent` keys.
async fn app_on(mock: &Mock, provider: &str, agent: &str) -> TestApp {
    spawn_app_with(Options {
        extra_toml: format!(
            "{}{}",
            provider_toml("a", mock, provider),
            agent_toml("claude", "a", agent)
        ),
        ..Default::default()
    })
    .await
}

/// POST one Cognite turn of agent `claude`, streamed or not.
async fn post(app: &TestApp, text: &str, stream: bool) -> reqwest::Response {
    let body =
        json!({"agentExternalId": "claude", "messages": [text_message(text)], "stream": stream});
    app.chat("p", &body).await
}

/// One streamed Cognite turn.
async fn streamed(app: &TestApp, text: &str) -> Vec<Event> {
    let res = post(app, text, true).await;
    assert_eq!(res.status(), 200);
    read_events(res).await
}

fn streamed_text(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.name == "delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect()
}

async fn quant(app: &TestApp, text: &str) -> (u16, Value) {
    app.quant_post("acme/ai/agents/claude/chat", &json!({"message": text}))
        .await
}

#[tokio::test]
async fn a_stall_before_the_first_byte_times_out_and_never_hangs() {
    let mock = anthropic_mock::start().await;
    let app = app_on(&mock, "max_retries = 2\nfirst_byte_timeout_ms = 300", "").await;
    mock.push([Reply::Late(5_000, message("late"))]);
    // The answer arriving after 5 s would be a 200: a 504 is the timeout firing.
    let (status, body) = app.say("p", "claude", "hi", None).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["type"], "upstream_timeout");
    assert_eq!(mock.calls(), 1, "a stalled provider is not asked again");
}

#[tokio::test]
async fn the_agent_overrides_the_providers_timeouts() {
    let mock = anthropic_mock::start().await;
    let app = app_on(
        &mock,
        "max_retries = 0\nfirst_byte_timeout_ms = 200",
        "first_byte_timeout_ms = 3000",
    )
    .await;
    mock.push([Reply::Late(600, message("worth the wait"))]);
    let (status, body) = app.say("p", "claude", "hi", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(text_of(&body), "worth the wait");
}

#[tokio::test]
async fn a_stall_between_chunks_after_text_ends_in_an_error_event() {
    let mock = anthropic_mock::start().await;
    let app = app_on(&mock, "max_retries = 2\nidle_timeout_ms = 300", "").await;
    // Event 4 is the second text delta: the first one has been forwarded.
    mock.push([Reply::Faulty(
        message("Hello world"),
        4,
        Fault::Stall(5_000),
    )]);
    let events = streamed(&app, "hi").await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "error", "{events:?}");
    assert_eq!(last.data["error"]["type"], "upstream_timeout");
    assert_eq!(streamed_text(&events), "Hello");
    assert_eq!(mock.calls(), 1, "no retry once output was forwarded");
}

#[tokio::test]
async fn death_mid_stream_before_any_text_is_retried_and_its_billed_usage_counted() {
    let mock = anthropic_mock::start().await;
    let app = app_on(&mock, "max_retries = 1", "").await;
    // Dies right after message_start (12 input tokens billed, 1 output).
    mock.push([Reply::Faulty(message("first"), 1, Fault::Die)]);
    let events = streamed(&app, "hi").await;
    assert_eq!(events.last().unwrap().name, "done", "{events:?}");
    assert_eq!(streamed_text(&events), "default answer");
    assert_eq!(mock.calls(), 2);
    let usage = events.iter().find(|e| e.name == "usage").unwrap();
    assert_eq!(usage.data["inputTokens"], 24, "both attempts were billed");
    assert_eq!(usage.data["outputTokens"], 5);

    // After text, death is an error event and no cursor.
    mock.push([Reply::Faulty(message("Hello world"), 4, Fault::Die)]);
    let events = streamed(&app, "hi").await;
    assert_eq!(events.last().unwrap().name, "error");
    assert_eq!(
        events.last().unwrap().data["error"]["type"],
        "upstream_error"
    );
    assert!(!events.iter().any(|e| e.data.to_string().contains("cursor")));
}

#[tokio::test]
async fn an_in_stream_overload_before_output_is_retried() {
    let mock = anthropic_mock::start().await;
    let app = app_on(&mock, "max_retries = 1", "").await;
    mock.push([Reply::Faulty(message("x"), 2, Fault::Overloaded)]);
    let events = streamed(&app, "hi").await;
    assert_eq!(streamed_text(&events), "default answer");
    assert_eq!(mock.calls(), 2);

    // With no retries left, the overload is a 503; nothing was streamed yet,
    // so it is an ordinary JSON error response.
    mock.push([
        Reply::Faulty(message("x"), 1, Fault::Overloaded),
        Reply::Faulty(message("x"), 1, Fault::Overloaded),
    ]);
    let res = post(&app, "hi", true).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_unavailable");
    assert_eq!(mock.calls(), 4);
}

#[tokio::test]
async fn rate_limits_and_overloads_are_retried_honouring_retry_after() {
    let mock = anthropic_mock::start().await;
    let app = app_on(&mock, "max_retries = 2", "").await;
    mock.push([Reply::Status(429, Some("1")), Reply::Status(529, None)]);
    let start = Instant::now();
    let (status, body) = quant(&app, "hi").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["text"], "default answer");
    assert_eq!(mock.calls(), 3);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );

    // Persistent 529s: 503 with a Retry-After.
    mock.push(vec![Reply::Status(529, Some("2")); 3]);
    let res = post(&app, "hi", false).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "2");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_unavailable");
    assert!(!body.to_string().contains("MOCK-UPSTREAM-DETAIL"));
}

#[tokio::test]
async fn a_retry_after_longer_than_the_deadline_is_answered_at_once() {
    let mock = anthropic_mock::start().await;
    let app = app_on(&mock, "max_retries = 3", "max_turn_seconds = 5").await;
    mock.push([Reply::Status(429, Some("30"))]);
    // Waiting out the 30 s would outlast this bound many times over.
    let res = tokio::time::timeout(Duration::from_secs(15), post(&app, "hi", false))
        .await
        .expect("answered without waiting out Retry-After");
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "30");
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn a_failing_provider_falls_back_to_the_next_one() {
    let primary = anthropic_mock::start().await;
    let secondary = anthropic_mock::start().await;
    let app = spawn_app_with(Options {
        extra_toml: format!(
            "{}{}{}",
            provider_toml("a", &primary, "max_retries = 1"),
            provider_toml("b", &secondary, "max_retries = 0"),
            agent_toml(
                "claude",
                "a",
                r#"fallback_providers = ["b"]
fallback_models = { b = "claude-fallback" }
tools = ["calculator"]"#
            )
        ),
        ..Default::default()
    })
    .await;
    // The primary is rate limited for longer than the turn may wait.
    primary.push([Reply::Status(529, None), Reply::Status(429, Some("600"))]);
    secondary.push([Reply::Message(message("from b"))]);
    let (status, body) = quant(&app, "hi").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["text"], "from b");
    assert_eq!((primary.calls(), secondary.calls()), (2, 1));
    assert_eq!(primary.received()[0].body["model"], "claude-test");
    assert_eq!(secondary.received()[0].body["model"], "claude-fallback");

    // Earlier steps' output does not block failing over a later step: step 1
    // streams text from the primary, step 2 (after the tool) fails over.
    primary.push([
        Reply::Message(tool_message(
            "toolu_1",
            "calculator",
            json!({"expression": "2+2"}),
        )),
        Reply::Status(503, None),
        Reply::Status(503, None),
    ]);
    secondary.push([Reply::Message(message("It is 4."))]);
    let events = streamed(&app, "2+2?").await;
    assert_eq!(events.last().unwrap().name, "done", "{events:?}");
    assert_eq!(streamed_text(&events), "Let me work that out.It is 4.");
    // The fallback saw the whole conversation, thinking block included.
    let received = secondary.received();
    let sent = &received.last().unwrap().body["messages"];
    assert_eq!(sent[1]["content"][0]["type"], "thinking");
    assert_eq!(sent[2]["content"][0]["content"], "4");
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_closes_after_a_good_trial() {
    let mock = anthropic_mock::start().await;
    let app = app_on(
        &mock,
        "max_retries = 0\nbreaker_threshold = 2\nbreaker_cooldown_seconds = 1",
        "",
    )
    .await;
    mock.push([Reply::Status(500, None), Reply::Status(500, None)]);
    for _ in 0..2 {
        let (status, _) = app.say("p", "claude", "hi", None).await;
        assert_eq!(status, 502);
    }
    // Open: the provider is not called; 503 says when to come back.
    let res = post(&app, "hi", false).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_unavailable");
    assert_eq!(mock.calls(), 2);

    // After the cooldown one trial call goes through; it succeeds, so it
    // closes. Until then every call is refused without reaching the provider.
    let mut trial = None;
    for _ in 0..200 {
        let (status, body) = app.say("p", "claude", "hi", None).await;
        if status != 503 {
            trial = Some((status, body));
            break;
        }
        assert_eq!(mock.calls(), 2, "an open breaker calls nobody");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, body) = trial.expect("the breaker let a trial call through");
    assert_eq!(status, 200, "{body}");
    let (status, _) = app.say("p", "claude", "hi", None).await;
    assert_eq!(status, 200);
    assert_eq!(mock.calls(), 4);
}
