//! Quant chat: sync turns on sessions, `system`, identity, expiry, conflicts, errors.

use agentgate::cursor::CursorContext;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

pub fn reply_text(v: &Value) -> &str {
    v["response"]["text"].as_str().unwrap_or_default()
}

pub async fn a_session_continues_across_turns_and_answers_in_the_quant_shape(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    let (status, one) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "hello", "userId": "u1", "stream": false}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let sid = one["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(reply_text(&one), "You said: hello [1 messages seen]");
    assert_eq!(one["response"]["stopReason"], "end_turn");
    assert_eq!(one["response"]["toolResults"], json!([]));
    assert_eq!(one["toolResults"], json!([]));
    assert!(one["response"]["usage"]["inputTokens"].as_u64().unwrap() > 0);

    let (status, two) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "again", "userId": "u1", "sessionId": sid}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(two["sessionId"], sid.as_str());
    assert_eq!(reply_text(&two), "You said: again [3 messages seen]");
    // The British spelling reaches the same sessions.
    let res = app
        .client
        .post(format!(
            "{}/api/v3/organisations/acme/ai/agents/echo/chat",
            app.address
        ))
        .json(&json!({"message": "third", "userId": "u1", "sessionId": sid}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        reply_text(&res.json().await.unwrap()),
        "You said: third [5 messages seen]"
    );
}

pub async fn system_is_appended_for_that_call_only_and_usage_fields_upstream_omitted_are_omitted(
    backend: Backend,
) {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]
        })))
        .mount(&upstream)
        .await;
    let app = spawn_app_with(Options {
        store: backend.clone(),
        upstream: Some(format!("{}/v1", upstream.uri())),
        ..Default::default()
    })
    .await;
    let (status, one) = app
        .quant_post(
            "acme/ai/agents/gpt/chat",
            &json!({"message": "hi", "system": "Answer in French."}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        one["response"]["usage"],
        json!({}),
        "no nulls for unreported usage"
    );
    let sid = one["sessionId"].as_str().unwrap();
    app.quant_post(
        "acme/ai/agents/gpt/chat",
        &json!({"message": "again", "sessionId": sid}),
    )
    .await;
    let bodies = received_bodies(&upstream).await;
    assert_eq!(
        bodies[0]["messages"][0],
        json!({"role": "system", "content": format!("{SYSTEM_PROMPT}\n\nAnswer in French.")})
    );
    assert_eq!(
        bodies[1]["messages"][0],
        json!({"role": "system", "content": SYSTEM_PROMPT})
    );
    assert_eq!(bodies[1]["messages"].as_array().unwrap().len(), 4);
}

pub async fn user_ids_isolate_sessions_and_narrow_the_sealed_subject(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    let (_, one) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "mine", "userId": "u1"}),
        )
        .await;
    let sid = one["sessionId"].as_str().unwrap().to_owned();
    for (org, agent, user) in [
        ("acme", "echo", Some("u2")),
        ("acme", "echo", None),
        ("other-org", "echo", Some("u1")),
    ] {
        let mut body = json!({"message": "steal", "sessionId": sid});
        if let Some(u) = user {
            body["userId"] = json!(u);
        }
        let (status, err) = app
            .quant_post(&format!("{org}/ai/agents/{agent}/chat"), &body)
            .await;
        assert_eq!(
            (status, err["error"].as_str()),
            (404, Some("session_not_found")),
            "{org} {agent} {user:?}"
        );
    }
    // The stored state is sealed to subject + NUL + "user:" + userId, nothing wider.
    let rec = app
        .state
        .store
        .get_session(&sid, T0)
        .await
        .unwrap()
        .unwrap();
    let sealed = rec.sealed.unwrap();
    let codec = &app.state.codec;
    // A session's state is bound to the session and its agent.
    let slot = format!("session:{sid}:echo");
    let ctx = |subject| CursorContext {
        project: "acme",
        agent: &slot,
        subject,
    };
    assert!(
        codec
            .open_stored(&sealed, &ctx("anonymous\u{0}user:u1"), T0)
            .is_ok()
    );
    assert!(codec.open_stored(&sealed, &ctx("anonymous"), T0).is_err());
    assert!(
        codec
            .open_stored(&sealed, &ctx("anonymous\u{0}user:u2"), T0)
            .is_err()
    );
    assert!(
        codec
            .open(&sealed, &ctx("anonymous\u{0}user:u1"), T0)
            .is_err(),
        "a stored state is never a valid cursor"
    );
    let other_session = CursorContext {
        project: "acme",
        agent: "session:another-session:echo",
        subject: "anonymous\u{0}user:u1",
    };
    assert!(
        codec.open_stored(&sealed, &other_session, T0).is_err(),
        "nor another session's state"
    );
    let plaintext_free = !sealed.contains("mine");
    assert!(plaintext_free, "conversation is encrypted at rest");
}

pub async fn a_session_bound_to_one_agent_is_not_found_for_another_and_unknown_ids_create_nothing(
    backend: Backend,
) {
    let app = spawn_app_with(Options {
        store: backend.clone(),
        extra_toml: "[[agents]]\nid = \"echo2\"\nprovider = \"offline\"\nmodel = \"scripted-1\"\n"
            .into(),
        ..Default::default()
    })
    .await;
    let (_, one) = app
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "x"}))
        .await;
    let sid = one["sessionId"].as_str().unwrap();
    let (status, _) = app
        .quant_post(
            "acme/ai/agents/echo2/chat",
            &json!({"message": "x", "sessionId": sid}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "x", "sessionId": "00000000-0000-0000-0000-000000000000"}),
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        app.state
            .store
            .get_session("00000000-0000-0000-0000-000000000000", T0)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn sessions_expire_after_inactivity_and_slide_on_each_turn(backend: Backend) {
    let app = spawn_app_with(Options {
        store: backend.clone(),
        extra_toml: "[sessions]\nttl_seconds = 60\n".into(),
        ..Default::default()
    })
    .await;
    let (_, one) = app
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "a"}))
        .await;
    let sid = one["sessionId"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        app.clock.advance(50);
        let (status, _) = app
            .quant_post(
                "acme/ai/agents/echo/chat",
                &json!({"message": "b", "sessionId": sid}),
            )
            .await;
        assert_eq!(status, 200, "activity slides the expiry");
    }
    app.clock.advance(61);
    let (status, body) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "c", "sessionId": sid}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("session_not_found"))
    );
}

pub async fn two_concurrent_turns_on_one_session_never_lose_a_message(backend: Backend) {
    // The model answers only when released: both turns are in flight (both
    // read the session) before either finishes.
    let (upstream, release) = crate::hostile::held_completion("slow", 1).await;
    let app = spawn_app_with(Options {
        store: backend.clone(),
        upstream: Some(upstream.base.clone()),
        ..Default::default()
    })
    .await;
    let (_, one) = app
        .quant_post("acme/ai/agents/gpt/chat", &json!({"message": "start"}))
        .await;
    let sid = one["sessionId"].as_str().unwrap().to_owned();
    let (left, right) = (
        json!({"message": "left", "sessionId": sid}),
        json!({"message": "right", "sessionId": sid}),
    );
    let a = app.quant_post("acme/ai/agents/gpt/chat", &left);
    let b = app.quant_post("acme/ai/agents/gpt/chat", &right);
    let both_waiting = async {
        upstream.wait_hits(3).await;
        release.add_permits(2);
    };
    let ((sa, ea), (sb, eb), ()) = tokio::join!(a, b, both_waiting);
    let mut statuses = [sa, sb];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{ea} / {eb}");
    let (_, detail) = app
        .quant_send(
            reqwest::Method::GET,
            &format!("acme/ai/sessions/{sid}"),
            None,
        )
        .await;
    let messages = detail["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        4,
        "the winner's turn is stored whole: {detail}"
    );
}

pub async fn quant_errors_use_the_quant_body(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({}), 400, "invalid_request"),
        (json!({"message": "  "}), 400, "invalid_request"),
        (
            json!({"message": "x", "userId": "a\u{0}b"}),
            400,
            "invalid_request",
        ),
        (
            json!({"message": "x", "stream": true, "async": true}),
            400,
            "invalid_request",
        ),
        (json!({"message": 5}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (s, v) = app.quant_post("acme/ai/agents/echo/chat", &body).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(code)),
            "{body} -> {v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(v["requestId"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, v) = app
        .quant_post("acme/ai/agents/nobody/chat", &json!({"message": "x"}))
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("agent_not_found"))
    );
    let res = app
        .client
        .post(app.quant("acme/ai/agents/echo/chat"))
        .header("x-request-id", "q-1")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Pinned exactly (a plain assert: this test runs once per store backend).
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"error":"invalid_request","message":"the request body is not valid JSON for this API: key must be a string at line 1 column 2","requestId":"q-1"}"#
    );
    let (status, v) = app
        .quant_send(reqwest::Method::GET, "acme/ai/nowhere", None)
        .await;
    assert_eq!((status, v["error"].as_str()), (404, Some("not_found")));
    let (status, v) = app
        .quant_send(reqwest::Method::GET, "acme/ai/agents/echo/chat", None)
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
}
