//! Async executions: queued → running → complete, failures, scoping, back-pressure.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

async fn upstream(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

pub async fn an_async_turn_is_queued_runs_and_completes_into_its_session(backend: Backend) {
    let up = upstream(
        ResponseTemplate::new(200)
            .set_body_json(completion("done later"))
            .set_delay(Duration::from_millis(500)),
    )
    .await;
    let app = spawn_app_with(Options {
        store: backend.clone(),
        upstream: Some(format!("{}/v1", up.uri())),
        ..Default::default()
    })
    .await;
    let (status, accepted) = app
        .quant_post(
            "acme/ai/agents/gpt/chat",
            &json!({"message": "take your time", "async": true, "userId": "u1"}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["agentId"], "gpt");
    assert_eq!(accepted["agentName"], "GPT agent");
    let request_id = accepted["requestId"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(request_id).is_ok());
    let poll_url = accepted["pollUrl"].as_str().unwrap().to_owned();
    assert_eq!(
        poll_url,
        format!("/api/v3/organizations/acme/ai/chat/executions/{request_id}")
    );

    let early: Value = app.get_json(&poll_url).await;
    assert!(
        ["pending", "running"].contains(&early["status"].as_str().unwrap()),
        "{early}"
    );
    let done = wait_done(&app, &poll_url, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(
        done["result"]["response"],
        json!({"role": "assistant", "content": "done later"})
    );
    assert_eq!(
        done["result"]["usage"],
        json!({"inputTokens": 11, "outputTokens": 3, "totalTokens": 14})
    );
    assert_eq!(done["result"]["sessionId"], accepted["sessionId"]);

    // The session holds the turn and continues synchronously.
    let sid = accepted["sessionId"].as_str().unwrap();
    let (status, _) = app
        .quant_post(
            "acme/ai/agents/gpt/chat",
            &json!({"message": "and now?", "sessionId": sid, "userId": "u1"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, detail) = app
        .quant_send(Method::GET, &format!("acme/ai/sessions/{sid}"), None)
        .await;
    assert_eq!(
        detail["messages"][0],
        json!({"role": "user", "content": "take your time"})
    );
    assert_eq!(detail["messages"].as_array().unwrap().len(), 4);
}

pub async fn a_failing_upstream_ends_in_failed_with_a_readable_error(backend: Backend) {
    let up = upstream(ResponseTemplate::new(500).set_body_string("secret upstream detail")).await;
    let app = spawn_app_with(Options {
        store: backend.clone(),
        upstream: Some(format!("{}/v1", up.uri())),
        ..Default::default()
    })
    .await;
    let (_, accepted) = app
        .quant_post(
            "acme/ai/agents/gpt/chat",
            &json!({"message": "x", "async": true}),
        )
        .await;
    let done = wait_done(
        &app,
        accepted["pollUrl"].as_str().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"]["ErrorType"], "upstream_error");
    assert_eq!(
        done["error"]["ErrorMessage"],
        "the model provider failed to answer"
    );
    assert!(done.get("result").is_none());
    assert!(!done.to_string().contains("secret"));
}

pub async fn polling_from_another_organisation_or_an_unknown_id_is_404(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    let (_, accepted) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "x", "async": true}),
        )
        .await;
    let id = accepted["requestId"].as_str().unwrap();
    wait_done(
        &app,
        accepted["pollUrl"].as_str().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    for path in [
        format!("evil/ai/chat/executions/{id}"),
        "acme/ai/chat/executions/nope".to_owned(),
    ] {
        let (status, v) = app.quant_send(Method::GET, &path, None).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (404, Some("execution_not_found")),
            "{path}"
        );
    }
    // Async on a foreign or unknown session is refused up front, not queued.
    let (status, _) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "x", "async": true, "sessionId": "missing"}),
        )
        .await;
    assert_eq!(status, 404);
}

pub async fn a_full_queue_answers_503_with_retry_after(backend: Backend) {
    let up = upstream(
        ResponseTemplate::new(200)
            .set_body_json(completion("slow"))
            .set_delay(Duration::from_secs(2)),
    )
    .await;
    let app = spawn_app_with(Options {
        store: backend.clone(),
        upstream: Some(format!("{}/v1", up.uri())),
        extra_toml: "[jobs]\nmax_queued = 1\nworkers = 1\n".into(),
        ..Default::default()
    })
    .await;
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..5 {
        let res = app
            .client
            .post(app.quant("acme/ai/agents/gpt/chat"))
            .json(&json!({"message": "x", "async": true}))
            .send()
            .await
            .unwrap();
        match res.status().as_u16() {
            202 => accepted += 1,
            503 => {
                let retry = res
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                refused = Some((retry, res.json::<Value>().await.unwrap()));
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(accepted >= 1);
    let (retry, body) = refused.expect("the queue filled up");
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(body["error"], "queue_full");
}

/// A worker that died after committing the turn into the session but before
/// recording the execution complete: the re-run completes with the committed
/// result instead of running the turn again.
pub async fn a_rerun_after_the_turn_committed_does_not_run_it_twice(backend: Backend) {
    use agentgate::clock::Clock;
    use agentgate::cursor::CursorContext;
    use agentgate::store::ExecutionStatus;
    let up = upstream(ResponseTemplate::new(200).set_body_json(completion("only once"))).await;
    let app = spawn_app_with(Options {
        store: backend,
        upstream: Some(format!("{}/v1", up.uri())),
        ..Default::default()
    })
    .await;
    let (status, accepted) = app
        .quant_post(
            "acme/ai/agents/gpt/chat",
            &json!({"message": "once please", "async": true, "userId": "u1"}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let poll_url = accepted["pollUrl"].as_str().unwrap().to_owned();
    let first = wait_done(&app, &poll_url, Duration::from_secs(10)).await;
    assert_eq!(first["status"], "complete", "{first}");
    assert_eq!(up.received_requests().await.unwrap().len(), 1);

    // The crash: the execution is back to `running` as if `complete` was
    // never written, and the job is delivered again.
    let request_id = accepted["requestId"].as_str().unwrap().to_owned();
    let sid = accepted["sessionId"].as_str().unwrap().to_owned();
    let store = &app.state.store;
    let now = app.clock.now();
    let mut rec = store
        .get_execution(&request_id, now)
        .await
        .unwrap()
        .unwrap();
    rec.status = ExecutionStatus::Running;
    rec.result = None;
    store.put_execution(rec, now).await.unwrap();
    let purpose = format!("execution/{request_id}");
    let subject = agentgate::sessions::narrowed_subject("anonymous", Some("u1"));
    let sealed_input = app
        .state
        .codec
        .seal_blob(
            json!({"message": "once please", "system": null})
                .to_string()
                .as_bytes(),
            &CursorContext {
                project: "acme",
                agent: &purpose,
                subject: &subject,
            },
            (now + 3600) as u64,
        )
        .unwrap();
    let job = agentgate::jobs::Job {
        request_id: request_id.clone(),
        org: "acme".into(),
        subject: "anonymous".into(),
        user_id: Some("u1".into()),
        agent_id: "gpt".into(),
        session_id: sid.clone(),
        sealed_input,
        tokens: Vec::new(),
    };
    store
        .enqueue(serde_json::to_string(&job).unwrap(), 10)
        .await
        .unwrap();
    let mut again = Value::Null;
    for _ in 0..500 {
        again = app.get_json(&poll_url).await;
        if again["status"] == "complete" || again["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again["status"], "complete", "{again}");
    assert_eq!(again["result"], first["result"], "the committed result");
    assert_eq!(
        up.received_requests().await.unwrap().len(),
        1,
        "the model was not asked again"
    );
    let (_, detail) = app
        .quant_send(
            Method::GET,
            &format!("acme/ai/sessions/{sid}?userId=u1"),
            None,
        )
        .await;
    assert_eq!(
        detail["messages"].as_array().unwrap().len(),
        2,
        "the message is in the session once: {detail}"
    );
}
