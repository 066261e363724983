//! Hostile or sloppy clients: what fuzzing found. Every case gets a 4xx in
//! the API's own error format, quoting at most a short prefix of its input.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use agentgate::clock::Clock;

use crate::helpers::*;

fn chat_body() -> Value {
    json!({"agentExternalId": "echo", "messages": [text_message("hi")]})
}

/// Send raw bytes and read the response until the server closes or 10 s pass.
async fn raw(app: &TestApp, request: &[u8]) -> String {
    let addr = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&out).contains("\"requestId\"") {
                    break;
                }
            }
            Err(_) => panic!("no answer within 10 s: {}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_declared_non_json_content_type_is_415_and_an_absent_one_is_accepted() {
    let app = spawn_app().await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let res = app
            .client
            .post(app.chat_url("p"))
            .header("content-type", ct)
            .body(chat_body().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415, "{ct}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["type"], "unsupported_media_type", "{ct}");
    }
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
    ] {
        let res = app
            .client
            .post(app.chat_url("p"))
            .header("content-type", ct)
            .body(chat_body().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{ct}");
    }
    let res = app
        .client
        .post(app.chat_url("p"))
        .body(chat_body().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "no content-type is accepted");
    // Quant answers in its own format.
    let res = app
        .client
        .post(app.quant("acme/ai/agents/echo/chat"))
        .header("content-type", "text/plain")
        .body(json!({"message": "hi"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "unsupported_media_type");
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_in_the_apis_format() {
    let app = spawn_app_with(Options {
        server_toml: "body_timeout_seconds = 1".into(),
        ..Default::default()
    })
    .await;
    let head = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: 100\r\n\r\n{{\"agent"
        )
    };
    let answer = raw(&app, head("/api/v1/projects/p/ai/agents/chat").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    let answer = raw(
        &app,
        head("/api/v3/organizations/acme/ai/agents/echo/chat").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn path_ids_must_be_valid_utf8_and_match_the_id_pattern() {
    let app = spawn_app().await;
    for project in ["%ff", "%fe", "%80", "a%20b", "-x", "%c3%a9"] {
        let res = app.chat(project, &chat_body()).await;
        assert_eq!(res.status(), 400, "{project}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request", "{project}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must match"),
            "{v}"
        );
    }
    for org in ["%ff", "%fe"] {
        let (status, v) = app
            .quant_post(
                &format!("{org}/ai/agents/echo/chat"),
                &json!({"message": "hi"}),
            )
            .await;
        assert_eq!(status, 400, "{org}");
        assert_eq!(v["error"], "invalid_request");
        let (status, _) = app
            .quant_send(reqwest::Method::GET, &format!("{org}/ai/sessions"), None)
            .await;
        assert_eq!(status, 400, "{org}");
    }
    let (status, v) = app
        .quant_post("acme/ai/agents/%ff/chat", &json!({"message": "hi"}))
        .await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test]
async fn content_encoding_must_be_exactly_one_known_coding() {
    let app = spawn_app().await;
    let send = |headers: Vec<(&'static str, Vec<u8>)>| {
        let mut req = app
            .client
            .post(app.chat_url("p"))
            .header("content-type", "application/json")
            .body(gzip(chat_body().to_string().as_bytes()));
        for (name, value) in headers {
            req = req.header(
                name,
                reqwest::header::HeaderValue::from_bytes(&value).unwrap(),
            );
        }
        req.send()
    };
    let res = send(vec![("content-encoding", b"gzip".to_vec())])
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for headers in [
        vec![
            ("content-encoding", b"gzip".to_vec()),
            ("content-encoding", b"gzip".to_vec()),
        ],
        vec![("content-encoding", b"gzip, identity".to_vec())],
        vec![("content-encoding", b"g\xffzip".to_vec())],
        vec![("content-encoding", b"br".to_vec())],
        vec![("content-encoding", Vec::new())],
    ] {
        let res = send(headers.clone()).await.unwrap();
        assert_eq!(res.status(), 415, "{headers:?}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["type"], "unsupported_encoding", "{headers:?}");
    }
}

#[tokio::test]
async fn errors_quote_a_short_prefix_of_the_input() {
    let app = spawn_app().await;
    // A small gzipped body that inflates to one megabyte of one bad value.
    let huge = json!({"agentExternalId": "echo", "messages": [{"role": "user", "content": "x".repeat(1 << 20)}]});
    let res = app
        .client
        .post(app.chat_url("p"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(huge.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let text = res.text().await.unwrap();
    assert!(text.len() < 2048, "a {} byte error body", text.len());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request");
}

#[tokio::test]
async fn health_endpoints_answer_a_wrong_method_with_a_json_405() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let res = app
            .client
            .post(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{path}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["type"], "method_not_allowed", "{path}");
    }
}

#[tokio::test]
async fn a_bad_quant_query_string_gets_the_quant_error_body() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.quant("acme/ai/sessions?userId=a&userId=b"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "invalid_request", "{v}");
    assert!(v["requestId"].is_string(), "{v}");
}

#[tokio::test]
async fn a_stored_state_that_does_not_open_is_a_500_not_a_cursor_error() {
    let app = spawn_app().await;
    let (status, first) = app
        .quant_post("acme/ai/agents/echo/chat", &json!({"message": "hi"}))
        .await;
    assert_eq!(status, 200, "{first}");
    let id = first["sessionId"].as_str().unwrap().to_owned();
    let now = app.clock.now();
    let store = &app.state.store;
    let mut rec = store.get_session(&id, now).await.unwrap().unwrap();
    // A state sealed under a key this replica does not have.
    rec.sealed = Some(rec.sealed.unwrap().replacen("cv1.k1.", "cv1.gone.", 1));
    let version = rec.version;
    store.replace_session(rec, version, now).await.unwrap();
    let (status, body) = app
        .quant_post(
            "acme/ai/agents/echo/chat",
            &json!({"message": "again", "sessionId": id}),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "internal_error", "{body}");
}

#[tokio::test]
async fn session_metadata_groups_and_offsets_are_bounded() {
    let app = spawn_app().await;
    let big = json!({"userId": "u1", "metadata": {"blob": "x".repeat(17 * 1024)}});
    let (status, v) = app.quant_post("acme/ai/sessions", &big).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("metadata"), "{v}");
    let (status, v) = app
        .quant_post(
            "acme/ai/sessions",
            &json!({"userId": "u1", "sessionGroup": "g".repeat(129)}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, created) = app
        .quant_post(
            "acme/ai/sessions",
            &json!({"userId": "u1", "metadata": {"team": "blue"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["sessionId"].as_str().unwrap();
    let (status, v) = app
        .quant_send(
            reqwest::Method::PUT,
            &format!("acme/ai/sessions/{id}"),
            Some(&big),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = app
        .quant_send(reqwest::Method::GET, "acme/ai/sessions?offset=20000", None)
        .await;
    assert_eq!(status, 400);
}
