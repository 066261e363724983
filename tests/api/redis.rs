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
    let mut done = Value::Null;
    for _ in 0..100 {
        done = b
            .client
            .get(format!("{}{poll}", b.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done["status"] == "complete" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
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
    let ready: Value = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["store"]["up"], true);
}
