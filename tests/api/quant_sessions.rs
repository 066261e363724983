//! The sessions API: create, list, get, update, extend, delete.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

pub async fn create_with_initial_messages_then_chat_binds_the_agent(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    let (status, created) = app
        .quant_post(
            "acme/ai/sessions",
            &json!({"userId": "u1", "sessionGroup": "g1", "metadata": {"k": "v"}, "expirationMinutes": 30,
                    "initialMessages": [{"role": "user", "content": "Earlier question"}, {"role": "assistant", "content": "Earlier answer"}]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "active");
    let sid = created["sessionId"].as_str().unwrap().to_owned();
    let created_at =
        chrono::DateTime::parse_from_rfc3339(created["createdAt"].as_str().unwrap()).unwrap();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(created["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!((expires_at - created_at).num_minutes(), 30);

    let (status, detail) = app
        .quant_send(Method::GET, &format!("acme/ai/sessions/{sid}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["id"], sid.as_str());
    assert_eq!(detail["title"], "Earlier question");
    assert_eq!(
        detail["messages"],
        json!([{"role": "user", "content": "Earlier question"}, {"role": "assistant", "content": "Earlier answer"}])
    );

    let (status, turn) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "Now", "sessionId": sid, "userId": "u1"}),
        )
        .await;
    assert_eq!(status, 200, "{turn}");
    assert_eq!(turn["response"]["text"], "You said: Now [3 messages seen]");
    let (_, detail) = app
        .quant_send(Method::GET, &format!("acme/ai/sessions/{sid}"), None)
        .await;
    assert_eq!(detail["model"], "scripted-1");
    assert_eq!(detail["messages"].as_array().unwrap().len(), 4);
}

pub async fn create_validates_its_input(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    for body in [
        json!({}),
        json!({"userId": "u1", "expirationMinutes": 4}),
        json!({"userId": "u1", "expirationMinutes": 1441}),
        json!({"userId": "u1", "initialMessages": [{"role": "system", "content": "x"}]}),
        json!({"userId": "u\u{0}1"}),
    ] {
        let (status, v) = app.quant_post("acme/ai/sessions", &body).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("invalid_request")),
            "{body} -> {v}"
        );
    }
}

pub async fn list_filters_pages_and_is_scoped_to_the_organisation(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        app.clock.advance(1);
        let user = if i % 2 == 0 { "even" } else { "odd" };
        let (_, v) = app
            .quant_post(
                "acme/ai/agents/echo/chat",
                &json!({"message": format!("m{i}"), "userId": user}),
            )
            .await;
        ids.push(v["sessionId"].as_str().unwrap().to_owned());
    }
    app.quant_post(
        "other/ai/agents/echo/chat",
        &json!({"message": "elsewhere"}),
    )
    .await;

    let (status, all) = app.quant_send(Method::GET, "acme/ai/sessions", None).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    let first = &all[0];
    assert_eq!(first["title"], "m4");
    assert!(first["created_at"].is_string() && first["updated_at"].is_string());

    let (_, even) = app
        .quant_send(Method::GET, "acme/ai/sessions?userId=even", None)
        .await;
    assert_eq!(even.as_array().unwrap().len(), 3);
    let (_, page) = app
        .quant_send(Method::GET, "acme/ai/sessions?limit=2&offset=1", None)
        .await;
    let page: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, newest_first[1..3]);
    for bad in ["limit=0", "limit=101", "limit=x", "offset=-1"] {
        let (status, v) = app
            .quant_send(Method::GET, &format!("acme/ai/sessions?{bad}"), None)
            .await;
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }
}

pub async fn update_appends_messages_and_validates_status(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    let (_, v) = app
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "first"}))
        .await;
    let sid = v["sessionId"].as_str().unwrap().to_owned();
    let path = format!("acme/ai/sessions/{sid}");
    let (status, updated) = app
        .quant_send(
            Method::PUT,
            &path,
            Some(&json!({"newMessages": [{"role": "user", "content": "added"}, {"role": "assistant", "content": "noted"}], "tokensUsed": 10, "status": "completed"})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["totalMessages"], 4);
    assert_eq!(updated["status"], "completed");
    let (_, detail) = app.quant_send(Method::GET, &path, None).await;
    assert_eq!(
        detail["messages"][3],
        json!({"role": "assistant", "content": "noted"})
    );
    let (status, _) = app
        .quant_send(Method::PUT, &path, Some(&json!({"status": "paused"})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .quant_send(Method::PUT, &path, Some(&json!({"tokensUsed": -1})))
        .await;
    assert_eq!(status, 400);
}

pub async fn extend_moves_the_expiry_up_to_the_maximum_age(backend: Backend) {
    let app = spawn_app_with(Options {
        store: backend.clone(),
        extra_toml: "[sessions]\nttl_seconds = 600\nmax_age_seconds = 7200\n".into(),
        ..Default::default()
    })
    .await;
    let (_, v) = app
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "x"}))
        .await;
    let sid = v["sessionId"].as_str().unwrap().to_owned();
    let extend = format!("acme/ai/sessions/{sid}/extend");
    let (status, ext) = app
        .quant_send(
            Method::PUT,
            &extend,
            Some(&json!({"additionalMinutes": 50})),
        )
        .await;
    assert_eq!(status, 200, "{ext}");
    let expires = chrono::DateTime::parse_from_rfc3339(ext["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!(expires.timestamp(), T0 + 600 + 50 * 60);
    // Past the extended expiry of the original TTL, the session (and its sealed state) lives on.
    app.clock.advance(600 + 60);
    let (status, turn) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "still", "sessionId": sid}),
        )
        .await;
    assert_eq!(status, 200, "{turn}");
    let (status, err) = app
        .quant_send(
            Method::PUT,
            &extend,
            Some(&json!({"additionalMinutes": 120})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("sessions.max_age_seconds"),
        "{err}"
    );
    let (status, _) = app.quant_send(Method::PUT, &extend, None).await;
    assert_eq!(
        status, 200,
        "an empty body extends by the default 60 minutes"
    );
}

pub async fn delete_removes_the_session_and_foreign_organisations_see_nothing(backend: Backend) {
    let app = spawn_app_with(backend.options()).await;
    let (_, v) = app
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "x"}))
        .await;
    let sid = v["sessionId"].as_str().unwrap().to_owned();
    let foreign = format!("evil/ai/sessions/{sid}");
    for m in [Method::GET, Method::DELETE] {
        let (status, _) = app.quant_send(m, &foreign, None).await;
        assert_eq!(status, 404);
    }
    let (status, _) = app
        .quant_send(Method::PUT, &format!("{foreign}/extend"), Some(&json!({})))
        .await;
    assert_eq!(status, 404);
    let path = format!("acme/ai/sessions/{sid}");
    let (status, body) = app.quant_send(Method::DELETE, &path, None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("session deleted"))
    );
    let (status, body) = app.quant_send(Method::GET, &path, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("session_not_found"))
    );
}
