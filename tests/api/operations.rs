//! Health, readiness, unknown routes, graceful shutdown.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        serde_json::json!({"status": "ready", "store": {"kind": "memory", "up": true}})
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let res = app.get("/nowhere").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "not_found"
    );
    let res = app.client.get(app.chat_url("p")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "method_not_allowed"
    );
}

#[tokio::test]
async fn without_a_default_project_the_short_route_is_404() {
    let app = spawn_app_with(Options {
        default_project: None,
        ..Default::default()
    })
    .await;
    let res = app
        .client
        .post(format!("{}/ai/agents/chat", app.address))
        .json(&serde_json::json!({"agentExternalId": "echo", "messages": [text_message("x")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn a_graceful_stop_ends_the_server() {
    let app = spawn_app().await;
    app.handle.stop(true).await;
    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await;
    assert!(res.is_err(), "the listener is closed after stop");
}
