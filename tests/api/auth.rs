//! `[auth] mode = "api_keys"`: 401 without valid credentials, 403 outside a
//! key's tenants, in each API's own format; the key's subject is bound into
//! cursors and sessions.

use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::*;

const ALPHA: &str = "ag-alpha-4f1c9e2b7d";
const BETA: &str = "ag-beta-8a3e5c1f0b";

fn sha(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn app() -> TestApp {
    spawn_app_with(Options {
        extra_toml: format!(
            r#"
[auth]
mode = "api_keys"

[[auth.api_keys]]
id = "alpha"
sha256 = "{}"
subject = "svc-alpha"
tenants = ["p1", "org1"]

[[auth.api_keys]]
id = "beta"
sha256 = "{}"
subject = "svc-beta"
tenants = ["*"]
"#,
            sha(ALPHA),
            sha(BETA).to_uppercase()
        ),
        ..Default::default()
    })
    .await
}

async fn chat(
    app: &TestApp,
    project: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = app.client.post(app.chat_url(project)).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

fn hello() -> Value {
    json!({"agentExternalId": "echo", "messages": [text_message("hello")]})
}

#[tokio::test]
async fn requests_without_valid_credentials_are_401_in_each_apis_format() {
    let app = app().await;
    for key in [None, Some("wrong-key"), Some("")] {
        let (status, body, headers) = chat(&app, "p1", key, &hello()).await;
        assert_eq!(status, 401, "{key:?}: {body}");
        assert_eq!(body["error"]["type"], "unauthorized");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let res = app
        .client
        .post(app.chat_url("p1"))
        .header("authorization", format!("Basic {ALPHA}"))
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "only the Bearer scheme");
    let res = app
        .client
        .post(app.quant("org1/ai/agents/echo/chat"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "unauthorized");
    // Health stays open.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_key_may_use_only_its_tenants() {
    let app = app().await;
    let (status, body, _) = chat(&app, "p1", Some(ALPHA), &hello()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = chat(&app, "p2", Some(ALPHA), &hello()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "forbidden");
    let (status, body, _) = chat(&app, "p2", Some(BETA), &hello()).await;
    assert_eq!(status, 200, "\"*\" allows every tenant: {body}");
    let res = app
        .client
        .get(app.quant("org2/ai/sessions"))
        .bearer_auth(ALPHA)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "forbidden");
}

#[tokio::test]
async fn a_cursor_or_session_of_one_key_is_not_another_keys() {
    let app = app().await;
    let (status, first, _) = chat(&app, "p1", Some(ALPHA), &hello()).await;
    assert_eq!(status, 200);
    let mut again = json!({"agentExternalId": "echo", "cursor": cursor_of(&first), "messages": [text_message("again")]});
    let (status, body, _) = chat(&app, "p1", Some(BETA), &again).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_cursor");
    let (status, body, _) = chat(&app, "p1", Some(ALPHA), &again).await;
    assert_eq!(status, 200, "{body}");
    again["cursor"] = json!(cursor_of(&body));
    assert!(text_of(&body).contains("[3 messages seen]"));

    let res = app
        .client
        .post(app.quant("org1/ai/agents/echo/chat"))
        .bearer_auth(ALPHA)
        .json(&json!({"message": "mine", "userId": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let sid = v["sessionId"].as_str().unwrap();
    let res = app
        .client
        .get(app.quant(&format!("org1/ai/sessions/{sid}")))
        .bearer_auth(BETA)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        404,
        "another subject does not see the session"
    );
}
