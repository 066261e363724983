//! `Idempotency-Key` on the Quant chat request: a replay never runs the
//! message twice, answers what the first attempt answered, and a key reused
//! for other content is refused.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::quant::reply_text;

const CHAT: &str = "acme/ai/agents/echo/chat";

/// POST a chat with the given `Idempotency-Key` headers; (status, replayed, body).
async fn keyed(app: &TestApp, path: &str, keys: &[&str], body: &Value) -> (u16, bool, Value) {
    let mut req = app.client.post(app.quant(path)).json(body);
    for k in keys {
        req = req.header("Idempotency-Key", *k);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let replayed = res
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, replayed, res.json().await.unwrap_or(Value::Null))
}

/// The answer to a key used before for another request.
fn refused_as_reused((status, _, err): (u16, bool, Value)) {
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"], "idempotency_key_reused");
}

/// Wait for the execution a 202 names to finish: it must complete.
async fn completes(app: &TestApp, accepted: &Value) {
    let poll = accepted["pollUrl"].as_str().unwrap();
    let done = wait_done(app, poll, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "complete", "{done}");
}

async fn messages(app: &TestApp, sid: &str) -> usize {
    let (status, detail) = app
        .quant_send(Method::GET, &format!("acme/ai/sessions/{sid}"), None)
        .await;
    assert_eq!(status, 200, "{detail}");
    detail["messages"].as_array().map_or(0, Vec::len)
}

pub async fn a_replayed_request_answers_its_recorded_response_and_runs_nothing(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    // A first request (no sessionId) and its replay: one session, one turn.
    let first = json!({"message": "hello", "userId": "u1"});
    let (status, replayed, one) = keyed(&app, CHAT, &["key-1"], &first).await;
    assert_eq!((status, replayed), (200, false), "{one}");
    assert_eq!(reply_text(&one), "You said: hello [1 messages seen]");
    let sid = one["sessionId"].as_str().unwrap().to_owned();
    let (status, replayed, again) = keyed(&app, CHAT, &["key-1"], &first).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(
        again, one,
        "the recorded response, byte for byte the same JSON"
    );
    assert_eq!(messages(&app, &sid).await, 2);

    // A turn on the session, replayed twice.
    let next = json!({"message": "again", "userId": "u1", "sessionId": sid});
    let (status, replayed, two) = keyed(&app, CHAT, &["key-2"], &next).await;
    assert_eq!((status, replayed), (200, false), "{two}");
    assert_eq!(reply_text(&two), "You said: again [3 messages seen]");
    for _ in 0..2 {
        let (status, replayed, same) = keyed(&app, CHAT, &["key-2"], &next).await;
        assert_eq!((status, replayed), (200, true));
        assert_eq!(same, two);
    }
    assert_eq!(messages(&app, &sid).await, 4);

    // The same key for another request: refused, nothing runs.
    let other = json!({"message": "something else", "userId": "u1", "sessionId": sid});
    refused_as_reused(keyed(&app, CHAT, &["key-2"], &other).await);
    // An older key whose response a later turn replaced: applied, not rerun.
    let (status, _, err) = keyed(&app, CHAT, &["key-1"], &first).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"], "conflict");
    assert_eq!(messages(&app, &sid).await, 4);

    // Keys are scoped to the caller: another userId's "key-1" is its own.
    let (status, replayed, theirs) = keyed(
        &app,
        CHAT,
        &["key-1"],
        &json!({"message": "hello", "userId": "u2"}),
    )
    .await;
    assert_eq!((status, replayed), (200, false), "{theirs}");
    assert_ne!(theirs["sessionId"], sid.as_str());
    assert_eq!(reply_text(&theirs), "You said: hello [1 messages seen]");

    // Without a key, the same request runs again (the documented default).
    let (status, replayed, plain) = keyed(&app, CHAT, &[], &next).await;
    assert_eq!((status, replayed), (200, false));
    assert_eq!(reply_text(&plain), "You said: again [5 messages seen]");

    // Malformed, repeated, or with a stream: 400 in the Quant error body.
    for (keys, body) in [
        (vec!["a key"], next.clone()),
        (vec![""], next.clone()),
        (vec!["k".repeat(256).leak() as &str], next.clone()),
        (vec!["k1", "k2"], next.clone()),
        (
            vec!["k3"],
            json!({"message": "x", "userId": "u1", "stream": true}),
        ),
    ] {
        let (status, _, err) = keyed(&app, CHAT, &keys, &body).await;
        assert_eq!(status, 400, "{keys:?}: {err}");
        assert_eq!(err["error"], "invalid_request");
        assert!(err["message"].as_str().unwrap().contains("Idempotency-Key"));
    }
    assert_eq!(messages(&app, &sid).await, 6);
}

pub async fn concurrent_attempts_of_one_keyed_request_commit_one_turn(backend: Backend) {
    // The model answers only when released, so both attempts are running
    // (both read the session) before either commits: a balancer's retry
    // that arrives while the first attempt is still in flight.
    let (upstream, release) = crate::hostile::held_completion("once", 1).await;
    let app = spawn_app_with(Options {
        store: backend.clone(),
        upstream: Some(upstream.base.clone()),
        ..Default::default()
    })
    .await;
    let (_, start) = app
        .quant_post("acme/ai/agents/gpt/chat", &json!({"message": "start"}))
        .await;
    let sid = start["sessionId"].as_str().unwrap().to_owned();
    let body = json!({"message": "only once", "sessionId": sid});
    let a = keyed(&app, "acme/ai/agents/gpt/chat", &["retry-me"], &body);
    let b = keyed(&app, "acme/ai/agents/gpt/chat", &["retry-me"], &body);
    let both_running = async {
        upstream.wait_hits(3).await;
        release.add_permits(2);
    };
    let ((sa, ra, ba), (sb, rb, bb), ()) = tokio::join!(a, b, both_running);
    assert_eq!((sa, sb), (200, 200), "{ba} / {bb}");
    assert_eq!(ba, bb, "both answer the committed response");
    assert!(ra ^ rb, "exactly one answer is the replay ({ra}, {rb})");
    assert_eq!(messages(&app, &sid).await, 4, "one turn was stored");
}

pub async fn a_replayed_async_request_finds_the_execution_it_queued(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    let body = json!({"message": "later", "userId": "u1", "async": true});
    let (status, replayed, accepted) = keyed(&app, CHAT, &["job-key"], &body).await;
    assert_eq!((status, replayed), (202, false), "{accepted}");
    let (status, replayed, again) = keyed(&app, CHAT, &["job-key"], &body).await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again["requestId"], accepted["requestId"]);
    assert_eq!(again["sessionId"], accepted["sessionId"]);
    assert_eq!(again["pollUrl"], accepted["pollUrl"]);
    completes(&app, &accepted).await;
    // After it ran, a replay still names the same execution, as it stands.
    let (status, replayed, late) = keyed(&app, CHAT, &["job-key"], &body).await;
    assert_eq!((status, replayed), (202, true));
    assert_eq!(late["requestId"], accepted["requestId"]);
    assert_eq!(late["status"], "complete");
    let sid = accepted["sessionId"].as_str().unwrap();
    assert_eq!(messages(&app, sid).await, 2, "the message ran once");
    // The same key with other content: refused.
    refused_as_reused(
        keyed(
            &app,
            CHAT,
            &["job-key"],
            &json!({"message": "other", "userId": "u1", "async": true}),
        )
        .await,
    );
}

pub async fn one_key_names_one_request_whether_sync_or_async(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    // Sync first, then the same key for an async request (no sessionId):
    // refused, nothing queued.
    let sync = json!({"message": "now", "userId": "u1"});
    let (status, _, one) = keyed(&app, CHAT, &["mode-a"], &sync).await;
    assert_eq!(status, 200, "{one}");
    let with_async = json!({"message": "now", "userId": "u1", "async": true});
    refused_as_reused(keyed(&app, CHAT, &["mode-a"], &with_async).await);
    let sid = one["sessionId"].as_str().unwrap();
    assert_eq!(messages(&app, sid).await, 2);
    // Async first, then the same key synchronously: refused, nothing runs.
    let (status, _, accepted) = keyed(&app, CHAT, &["mode-b"], &with_async).await;
    assert_eq!(status, 202, "{accepted}");
    refused_as_reused(keyed(&app, CHAT, &["mode-b"], &sync).await);
    completes(&app, &accepted).await;
    let sid = accepted["sessionId"].as_str().unwrap();
    assert_eq!(messages(&app, sid).await, 2);
}

/// A replay of an async request that is still pending queues it again (its
/// first attempt may have died before queueing it); the second delivery
/// finds the turn committed and runs nothing twice.
pub async fn a_pending_replay_is_queued_again_and_runs_once(backend: Backend) {
    let (upstream, release) = crate::hostile::held_completion("done", 0).await;
    let app = spawn_app_with(Options {
        store: backend.clone(),
        upstream: Some(upstream.base.clone()),
        extra_toml: "[jobs]\nworkers = 1\n".into(),
        ..Default::default()
    })
    .await;
    let chat = "acme/ai/agents/gpt/chat";
    // The one worker is held at the model by a first job...
    let (status, blocker) = app
        .quant_post(chat, &json!({"message": "first", "async": true}))
        .await;
    assert_eq!(status, 202, "{blocker}");
    upstream.wait_hits(1).await;
    // ...so the keyed one stays pending, and its replay queues it again.
    let body = json!({"message": "keyed", "async": true});
    let (status, _, accepted) = keyed(&app, chat, &["pending-key"], &body).await;
    assert_eq!(status, 202, "{accepted}");
    let (status, replayed, again) = keyed(&app, chat, &["pending-key"], &body).await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again["status"], "queued");
    release.add_permits(10);
    completes(&app, &blocker).await;
    completes(&app, &accepted).await;
    // The second delivery of the keyed job is taken after the first (one
    // worker): it finds the turn committed and calls no model.
    let sid = accepted["sessionId"].as_str().unwrap();
    assert_eq!(messages(&app, sid).await, 2, "the keyed message ran once");
    assert_eq!(upstream.hits(), 2, "one model call per message");
}
