//! Several replicas on one Redis, and Redis outages.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::redis_server::RedisServer;

fn shared(redis: &RedisServer, prefix: &str) -> Options {
    Options {
        store: Backend::Redis {
            url: redis.url(),
            shared_prefix: Some(prefix.into()),
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn two_replicas_share_sessions_and_async_executions() {
    let redis = RedisServer::start().await;
    let a = spawn_app_with(shared(&redis, "shared")).await;
    let b = spawn_app_with(shared(&redis, "shared")).await;

    let (status, one) = a
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "on a", "userId": "u1"}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let sid = one["sessionId"].as_str().unwrap().to_owned();
    let (status, two) = b
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "on b", "userId": "u1", "sessionId": sid}),
        )
        .await;
    assert_eq!(status, 200, "{two}");
    assert_eq!(two["response"]["text"], "You said: on b [3 messages seen]");
    let (_, listed) = b
        .quant_send(Method::GET, "acme/ai/sessions?userId=u1", None)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let (status, accepted) = a
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "async", "userId": "u1", "sessionId": sid, "async": true}),
        )
        .await;
    assert_eq!(status, 202);
    let poll = accepted["pollUrl"].as_str().unwrap();
    let done = wait_done(&b, poll, Duration::from_secs(5)).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(
        done["result"]["response"]["content"],
        "You said: async [5 messages seen]"
    );
}

#[tokio::test]
async fn a_redis_outage_fails_only_the_store_endpoints_and_recovers_without_a_restart() {
    let redis = RedisServer::start().await;
    let app = spawn_app_with(shared(&redis, "outage")).await;
    let (status, _) = app
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "before"}))
        .await;
    assert_eq!(status, 200);

    let mut redis = redis;
    redis.kill();
    let res = app
        .client
        .post(app.quant("acme/ai/agents/echo/chat"))
        .json(&json!({"message": "during"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "store_unavailable");
    let (status, body) = app.quant_send(Method::GET, "acme/ai/sessions", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("store_unavailable"))
    );

    // Cursor chat needs no store and keeps working; readiness stays up and reports the store.
    let (status, _) = app.say("p", "echo", "cursor chat still works", None).await;
    assert_eq!(status, 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["store"],
        json!({"kind": "redis", "up": false})
    );

    let _redis = redis.restart().await;
    let mut recovered = false;
    for _ in 0..60 {
        let (status, _) = app
            .quant_post("acme/ai/agents/echo/chat", &json!({"message": "after"}))
            .await;
        if status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "Quant chat works again once Redis is back");
    let ready: Value = app.get_json("/readyz").await;
    assert_eq!(ready["store"]["up"], true);
}

/// Post an async turn to `a` and wait until a worker is running it.
async fn start_job_on(a: &TestApp) -> String {
    let (status, accepted) = a
        .quant_post(
            "acme/ai/agents/gpt/chat",
            &json!({"message": "long job", "async": true}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let poll = accepted["pollUrl"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        let v: Value = a.get_json(&poll).await;
        if v["status"] == "running" {
            return poll;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the job never started");
}

/// A mock upstream whose first call hangs (the dying replica's) and later calls answer.
async fn hanging_then_quick() -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("from the dead replica"))
                .set_delay(Duration::from_secs(30)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("from the survivor")))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_job_whose_replica_dies_mid_turn_completes_once_on_another_replica() {
    let redis = RedisServer::start().await;
    let upstream = hanging_then_quick().await;
    let opts = || Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: "[jobs]\nlease_seconds = 1\n".into(),
        ..shared(&redis, "crash")
    };
    let a = spawn_app_with(opts()).await;
    let poll = start_job_on(&a).await;
    let b = spawn_app_with(opts()).await;
    a.kill().await;

    let done = wait_done(&b, &poll, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["result"]["response"]["content"], "from the survivor");
    // Run to completion once: the session holds exactly one turn.
    let sid = done["sessionId"].as_str().unwrap();
    let (_, detail) = b
        .quant_send(Method::GET, &format!("acme/ai/sessions/{sid}"), None)
        .await;
    assert_eq!(
        detail["messages"],
        json!([{"role": "user", "content": "long job"}, {"role": "assistant", "content": "from the survivor"}])
    );
    assert_eq!(
        upstream.received_requests().await.unwrap().len(),
        2,
        "one call per attempt"
    );
}

#[tokio::test]
async fn a_job_past_max_attempts_is_failed_not_retried_forever() {
    let redis = RedisServer::start().await;
    let upstream = hanging_then_quick().await;
    let opts = || Options {
        upstream: Some(format!("{}/v1", upstream.uri())),
        extra_toml: "[jobs]\nlease_seconds = 1\nmax_attempts = 1\n".into(),
        ..shared(&redis, "attempts")
    };
    let a = spawn_app_with(opts()).await;
    let poll = start_job_on(&a).await;
    let b = spawn_app_with(opts()).await;
    a.kill().await;
    let done = wait_done(&b, &poll, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        done["error"]["ErrorMessage"],
        "the execution was abandoned after 1 attempt(s)"
    );
    assert_eq!(upstream.received_requests().await.unwrap().len(), 1);
}
