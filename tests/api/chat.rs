//! The Cognite chat surface: conversations, what the upstream receives, body decoding.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_two_turn_conversation_sends_the_full_history_upstream() {
    let upstream = openai_upstream("Paris is the capital.").await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        ..Default::default()
    })
    .await;

    let (status, first) = app
        .say("proj-a", "gpt", "What is the capital of France?", None)
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["agentExternalId"], "gpt");
    assert_eq!(first["agentId"], "gpt");
    assert_eq!(first["response"]["type"], "result");
    assert_eq!(
        first["response"]["messages"],
        json!([{"role": "agent", "content": {"type": "text", "text": "Paris is the capital."}}])
    );
    let cursor = cursor_of(&first);
    assert!(cursor.starts_with("cv1.k1."));

    let (status, second) = app
        .say("proj-a", "gpt", "And of Italy?", Some(&cursor))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(cursor_of(&second), cursor);

    let bodies = received_bodies(&upstream).await;
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[0],
        json!({
            "model": "gpt-test-model",
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": "What is the capital of France?"}
            ],
            "temperature": 0.3,
            "max_tokens": 256,
            "stream": false
        })
    );
    assert_eq!(
        bodies[1]["messages"],
        json!([
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris is the capital."},
            {"role": "user", "content": "And of Italy?"}
        ])
    );
    let auth = upstream.received_requests().await.unwrap()[0]
        .headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(auth.as_deref(), Some("Bearer sk-test-secret-key-123"));
}

#[tokio::test]
async fn images_reach_the_upstream_as_data_urls() {
    let upstream = openai_upstream("A red pixel.").await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        ..Default::default()
    })
    .await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
    let body = json!({
        "agentExternalId": "gpt",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "mediaType": "image/png", "data": png}
        ]}]
    });
    let res = app.chat("p", &body).await;
    assert_eq!(res.status(), 200);
    let sent = &received_bodies(&upstream).await[0]["messages"][1];
    assert_eq!(
        sent,
        &json!({"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}
        ]})
    );
}

#[tokio::test]
async fn the_scripted_agent_remembers_the_conversation() {
    let app = spawn_app().await;
    let (_, one) = app.say("p", "echo", "hello", None).await;
    assert_eq!(text_of(&one), "You said: hello [1 messages seen]");
    let (_, two) = app.say("p", "echo", "again", Some(&cursor_of(&one))).await;
    assert_eq!(text_of(&two), "You said: again [3 messages seen]");
    // Forking: replaying the first cursor is allowed and continues from turn one.
    let (status, fork) = app.say("p", "echo", "fork", Some(&cursor_of(&one))).await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&fork), "You said: fork [3 messages seen]");
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(
        &json!({"agentExternalId": "echo", "messages": [text_message("zipped")]}),
    )
    .unwrap();
    let res = app
        .client
        .post(app.chat_url("p"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(text_of(&v), "You said: zipped [1 messages seen]");
}

#[tokio::test]
async fn unknown_encodings_and_oversized_bodies_are_refused() {
    let app = spawn_app_with(Options {
        max_body_bytes: 2 * 1024 * 1024,
        ..Default::default()
    })
    .await;
    let send = |encoding: Option<&'static str>, body: Vec<u8>| {
        let mut req = app
            .client
            .post(app.chat_url("p"))
            .header("content-type", "application/json");
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        req.body(body).send()
    };
    let small =
        serde_json::to_vec(&json!({"agentExternalId": "echo", "messages": [text_message("x")]}))
            .unwrap();
    let res = send(Some("br"), small).await.unwrap();
    assert_eq!(res.status(), 415);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["type"], "unsupported_encoding");

    let res = send(None, vec![b' '; 3 * 1024 * 1024]).await.unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "body_too_large"
    );

    // A gzip bomb: 64 MiB of zeros in about 64 KiB, stopped at the 2 MiB limit.
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    assert!(bomb.len() < 2 * 1024 * 1024);
    let res = send(Some("gzip"), bomb).await.unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "body_too_large"
    );

    let res = send(Some("gzip"), b"not gzip at all".to_vec())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // The server keeps serving.
    let (status, _) = app.say("p", "echo", "still here", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn agent_external_id_wins_over_the_deprecated_agent_id_and_unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let res = app
        .chat("p", &json!({"agentId": "echo", "messages": [text_message("old")], "stream": false, "retentionPolicy": "temporary", "future": {"x": 1}}))
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .chat("p", &json!({"agentExternalId": "echo", "agentId": "nobody", "messages": [text_message("both")]}))
        .await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["agentExternalId"], "echo");
}

#[tokio::test]
async fn the_default_project_route_uses_the_configured_project() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!("{}/ai/agents/chat", app.address))
        .json(&json!({"agentExternalId": "echo", "messages": [text_message("hi")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cursor = cursor_of(&res.json().await.unwrap());
    // The cursor is bound to the default project "home".
    let (status, _) = app.say("home", "echo", "next", Some(&cursor)).await;
    assert_eq!(status, 200);
    let (status, body) = app.say("elsewhere", "echo", "next", Some(&cursor)).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("invalid_cursor"))
    );
}

#[tokio::test]
async fn request_ids_are_kept_when_valid_and_generated_otherwise() {
    let app = spawn_app().await;
    let body = json!({"agentExternalId": "echo", "messages": [text_message("hi")]});
    let res = app
        .client
        .post(app.chat_url("p"))
        .header("x-request-id", "trace-abc.123_X")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-abc.123_X");
    let res = app
        .client
        .post(app.chat_url("p"))
        .header("x-request-id", "bad id!")
        .json(&body)
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        id.len() >= 16 && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "{id}"
    );
    let res = app.get("/healthz").await;
    assert!(res.headers().contains_key("x-request-id"));
}
