//! Cursors across replicas, key rotation, tampering, binding and expiry.

use agentgate::cursor::token;
use agentgate::cursor::{CursorContext, Keyring};
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_cursor_from_one_replica_continues_on_another_with_the_same_keys() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let (_, one) = a.say("p", "echo", "hello", None).await;
    let (status, two) = b.say("p", "echo", "on b", Some(&cursor_of(&one))).await;
    assert_eq!(status, 200, "{two}");
    assert_eq!(text_of(&two), "You said: on b [3 messages seen]");
}

#[tokio::test]
async fn rotation_demoted_keys_still_open_and_removed_keys_are_refused() {
    let old = spawn_app_with(Options {
        keys: key_line("old", 1),
        ..Default::default()
    })
    .await;
    let (_, one) = old.say("p", "echo", "hello", None).await;
    let cursor = cursor_of(&one);
    assert!(cursor.starts_with("cv1.old."));

    let promoted = spawn_app_with(Options {
        keys: format!("{},{}", key_line("new", 2), key_line("old", 1)),
        ..Default::default()
    })
    .await;
    let (status, two) = promoted.say("p", "echo", "rotated", Some(&cursor)).await;
    assert_eq!(status, 200);
    assert!(
        cursor_of(&two).starts_with("cv1.new."),
        "re-sealed under the active key"
    );

    let removed = spawn_app_with(Options {
        keys: key_line("new", 2),
        ..Default::default()
    })
    .await;
    let (status, body) = removed.say("p", "echo", "too late", Some(&cursor)).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("invalid_cursor"))
    );
    let (status, _) = removed
        .say("p", "echo", "continues", Some(&cursor_of(&two)))
        .await;
    assert_eq!(status, 200);
}

/// Send a chat with `cursor` and a fixed request id; return status and raw body.
async fn try_cursor(app: &TestApp, project: &str, agent: &str, cursor: &str) -> (u16, String) {
    let res = app
        .client
        .post(app.chat_url(project))
        .header("x-request-id", "fixed-id")
        .json(&json!({"agentExternalId": agent, "messages": [text_message("x")], "cursor": cursor}))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn bad_cursors_get_one_identical_invalid_cursor_body_and_nothing_breaks() {
    let app = spawn_app_with(Options {
        upstream: Some("http://127.0.0.1:9/v1".into()),
        ..Default::default()
    })
    .await;
    let (_, one) = app.say("proj-a", "echo", "hello", None).await;
    let good = cursor_of(&one);
    let mut flipped = good.clone().into_bytes();
    let i = flipped.len() - 10;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let truncated = good[..good.len() - 30].to_owned();
    let other_key = spawn_app_with(Options {
        keys: key_line("k1", 9),
        ..Default::default()
    })
    .await;
    let (_, foreign) = other_key.say("proj-a", "echo", "x", None).await;

    let mut bodies = Vec::new();
    for (project, agent, cursor) in [
        ("proj-a", "echo", flipped.as_str()),
        ("proj-a", "echo", truncated.as_str()),
        ("proj-a", "echo", "garbage"),
        ("proj-a", "echo", ""),
        ("proj-a", "echo", "cv1.k1.%%%"),
        ("proj-b", "echo", good.as_str()),
        ("proj-a", "gpt", good.as_str()),
        ("proj-a", "echo", cursor_of(&foreign).as_str()),
    ] {
        let (status, body) = try_cursor(&app, project, agent, cursor).await;
        assert_eq!(status, 400, "{project}/{agent}: {body}");
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "all bodies identical: {bodies:#?}"
    );
    insta::assert_snapshot!(bodies[0], @r#"{"error":{"code":400,"message":"the cursor is not valid for this project, agent and caller; start a new conversation","type":"invalid_cursor","requestId":"fixed-id"}}"#);

    let (status, body) = try_cursor(&app, "proj-a", "echo", &"A".repeat(1_398_257)).await;
    assert_eq!(status, 400);
    assert!(body.contains("\"type\":\"cursor_too_large\""), "{body}");

    // The good cursor still works after all that.
    let (status, _) = try_cursor(&app, "proj-a", "echo", &good).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_expired_cursor_is_refused_with_cursor_expired() {
    let app = spawn_app().await;
    let (_, one) = app.say("p", "echo", "hello", None).await;
    let cursor = cursor_of(&one);
    app.clock.advance(3600 + 60);
    assert_eq!(
        try_cursor(&app, "p", "echo", &cursor).await.0,
        200,
        "within skew"
    );
    app.clock.advance(1);
    let (status, body) = try_cursor(&app, "p", "echo", &cursor).await;
    assert_eq!(status, 400);
    insta::assert_snapshot!(body, @r#"{"error":{"code":400,"message":"the cursor has expired; start a new conversation","type":"cursor_expired","requestId":"fixed-id"}}"#);
}

#[tokio::test]
async fn conversations_past_the_maximum_age_are_expired() {
    let app = spawn_app_with(Options {
        extra_toml: String::new(),
        ..Default::default()
    })
    .await;
    let (_, mut last) = app.say("p", "echo", "start", None).await;
    // Keep the conversation alive turn by turn for a day.
    for _ in 0..24 {
        app.clock.advance(3600);
        let (status, next) = app.say("p", "echo", "tick", Some(&cursor_of(&last))).await;
        assert_eq!(status, 200);
        last = next;
    }
    app.clock.advance(1);
    let (status, body) = try_cursor(&app, "p", "echo", &cursor_of(&last)).await;
    assert_eq!(status, 400);
    assert!(body.contains("\"type\":\"conversation_expired\""), "{body}");
}

#[tokio::test]
async fn the_cursor_holds_no_system_prompt_and_binds_the_principal_not_the_body() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.chat_url("p"))
        .header("authorization", "Bearer someone-elses-token")
        .json(&json!({
            "agentExternalId": "echo",
            "messages": [text_message("hi")],
            "subject": "mallory", "userId": "mallory", "project": "other"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cursor = cursor_of(&res.json::<Value>().await.unwrap());
    let keys = Keyring::parse(&default_keys()).unwrap();
    let ctx = CursorContext {
        project: "p",
        agent: "echo",
        subject: "anonymous",
    };
    let opened = token::open(token::Purpose::Cursor, &keys, &cursor, &ctx, T0)
        .expect("bound to the anonymous principal");
    let plaintext = String::from_utf8(opened.plaintext.to_vec()).unwrap();
    assert!(plaintext.contains("\"hi\""));
    assert!(!plaintext.contains("TEST-SYSTEM-PROMPT"), "{plaintext}");
    assert!(!plaintext.contains("mallory") && !plaintext.contains("someone-elses-token"));
    for subject in ["mallory", "someone-elses-token"] {
        let ctx = CursorContext { subject, ..ctx };
        assert!(token::open(token::Purpose::Cursor, &keys, &cursor, &ctx, T0).is_err());
    }
}

#[tokio::test]
async fn a_turn_too_large_to_seal_fails_with_422_and_no_cursor() {
    let app = spawn_app().await;
    // The scripted model echoes the text, so this turn holds about 1.2 MB.
    let (status, body) = app.say("p", "echo", &"w".repeat(600 * 1024), None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["type"], "conversation_too_large");
    assert!(body.get("response").is_none());
}

#[tokio::test]
async fn old_turns_are_dropped_to_fit_the_budget_and_the_cursor_keeps_working() {
    let app = spawn_app_with(Options {
        extra_toml: r#"
[[agents]]
id = "small"
provider = "offline"
model = "scripted-1"
history_budget_bytes = 4096
"#
        .into(),
        ..Default::default()
    })
    .await;
    let (_, mut last) = app.say("p", "small", "start", None).await;
    for i in 0..30 {
        let (status, next) = app
            .say(
                "p",
                "small",
                &format!("turn {i} {}", "z".repeat(300)),
                Some(&cursor_of(&last)),
            )
            .await;
        assert_eq!(status, 200, "{next}");
        last = next;
    }
    let seen: usize = text_of(&last)
        .rsplit('[')
        .next()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        seen < 20 && seen % 2 == 1,
        "old turns were dropped whole: saw {seen}"
    );
    assert!(cursor_of(&last).len() < 8 * 1024);
}
