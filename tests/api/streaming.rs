//! SSE on both APIs, against a mock upstream that is a real HTTP server
//! streaming chunks with delays between them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::*;

/// One step of a scripted upstream stream.
#[derive(Clone)]
enum Step {
    Chunk(Value),
    Sleep(u64),
    Done,
    /// An SSE comment (as real upstreams send keep-alives).
    Ping,
    /// Drop the connection without finishing.
    Die,
}

#[derive(Clone)]
struct Upstream {
    /// Scripts for successive streamed calls (the last one repeats).
    scripts: Arc<Vec<Vec<Step>>>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    /// Set when the last script step was sent.
    finished: Arc<AtomicBool>,
    /// Set when a response stream was dropped before its end (client went away).
    abandoned: Arc<AtomicBool>,
}

struct DropFlag(Arc<AtomicBool>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

async fn completions(up: web::Data<Upstream>, body: web::Json<Value>) -> HttpResponse {
    let n = up.calls.fetch_add(1, Ordering::SeqCst);
    let script = up.scripts[n.min(up.scripts.len() - 1)].clone();
    if body["stream"] != true {
        // The same answer, non-streamed: concatenate the text chunks.
        let text: String = script
            .iter()
            .filter_map(|s| match s {
                Step::Chunk(c) => c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned),
                _ => None,
            })
            .collect();
        return HttpResponse::Ok().json(completion(&text));
    }
    let finished = up.finished.clone();
    let abandoned = up.abandoned.clone();
    let stream = async_stream::stream! {
        let mut guard = DropFlag(abandoned, false);
        for step in script {
            match step {
                Step::Chunk(c) => yield Ok::<_, actix_web::Error>(web::Bytes::from(format!("data: {c}\n\n"))),
                Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Step::Done => yield Ok(web::Bytes::from_static(b"data: [DONE]\n\n")),
                Step::Ping => yield Ok(web::Bytes::from_static(b": ping\n\n")),
                Step::Die => {
                    guard.1 = true;
                    yield Err(actix_web::error::ErrorInternalServerError("dying"));
                    return;
                }
            }
        }
        guard.1 = true;
        finished.store(true, Ordering::SeqCst);
    };
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(stream)
}

async fn start_upstream(scripts: Vec<Vec<Step>>) -> (String, Upstream) {
    let up = Upstream {
        scripts: Arc::new(scripts),
        calls: Default::default(),
        finished: Default::default(),
        abandoned: Default::default(),
    };
    let data = web::Data::new(up.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/v1/chat/completions", web::post().to(completions))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}/v1"), up)
}

fn text(t: &str) -> Step {
    Step::Chunk(json!({"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]}))
}

fn stop() -> Step {
    Step::Chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
}

fn usage() -> Step {
    Step::Chunk(json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}))
}

/// A parsed SSE event.
#[derive(Debug)]
pub struct Event {
    pub id: String,
    pub name: String,
    pub data: Value,
}

/// Read SSE events from a response until `done` or `error` (bounded).
pub async fn read_events(res: reqwest::Response) -> Vec<Event> {
    let mut stream = res.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut name, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.into();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    name = v.into();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if name.is_empty() {
                continue; // a keep-alive comment
            }
            let end = name == "done" || name == "error";
            events.push(Event {
                id,
                name,
                data: serde_json::from_str(&data).unwrap(),
            });
            if end {
                return events;
            }
        }
    }
    events
}

async fn app_with(base: String) -> TestApp {
    spawn_app_with(Options {
        upstream: Some(base),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn cognite_streams_deltas_then_done_with_the_same_body_as_json() {
    let (base, _up) = start_upstream(vec![vec![
        text("Hello"),
        text(", "),
        text("world"),
        stop(),
        usage(),
        Step::Done,
    ]])
    .await;
    let app = app_with(base).await;
    let body = json!({"agentExternalId": "gpt", "messages": [text_message("hi")], "stream": true});
    let res = app.chat("p", &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert!(
        res.headers()
            .get("content-encoding")
            .is_none_or(|v| v == "identity")
    );
    let events = read_events(res).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["delta", "delta", "delta", "usage", "done"]);
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"]);
    assert_eq!(events[0].data, json!({"text": "Hello"}));
    assert_eq!(events[3].data, json!({"inputTokens": 9, "outputTokens": 4}));
    let done = &events[4].data;
    assert_eq!(text_of(done), "Hello, world");

    // The same turn without streaming gives the same answer, and the streamed cursor continues.
    let (status, json_body) = app.say("p", "gpt", "hi", None).await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&json_body), text_of(done));
    let (status, _) = app.say("p", "gpt", "next", Some(&cursor_of(done))).await;
    assert_eq!(status, 200);

    // Accept: text/event-stream asks for a stream too.
    let res = app
        .client
        .post(app.chat_url("p"))
        .header("accept", "text/event-stream")
        .json(&json!({"agentExternalId": "gpt", "messages": [text_message("hi")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(read_events(res).await.last().unwrap().name, "done");
}

#[tokio::test]
async fn the_first_event_arrives_before_the_upstream_finishes() {
    let (base, up) = start_upstream(vec![vec![
        text("first"),
        Step::Sleep(1500),
        text(" last"),
        stop(),
        Step::Done,
    ]])
    .await;
    let app = app_with(base).await;
    let res = app
        .chat(
            "p",
            &json!({"agentExternalId": "gpt", "messages": [text_message("hi")], "stream": true}),
        )
        .await;
    let mut stream = res.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: delta"));
    assert!(
        !up.finished.load(Ordering::SeqCst),
        "the first event was forwarded before the upstream finished"
    );
}

#[tokio::test]
async fn an_upstream_dying_mid_stream_ends_in_an_error_event_and_no_cursor() {
    let (base, _up) = start_upstream(vec![vec![text("partial"), Step::Sleep(50), Step::Die]]).await;
    let app = app_with(base).await;
    let res = app
        .chat(
            "p",
            &json!({"agentExternalId": "gpt", "messages": [text_message("hi")], "stream": true}),
        )
        .await;
    let events = read_events(res).await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "error", "{events:?}");
    assert_eq!(last.data["error"]["type"], "upstream_error");
    assert!(events.iter().all(|e| e.name != "done"));
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_call() {
    // The model keeps producing tokens; the gateway notices the closed client
    // on its next writes (a silent stream is noticed at the next keep-alive).
    let mut script = vec![text("a")];
    for _ in 0..100 {
        script.extend([Step::Sleep(100), text("."), Step::Ping]);
    }
    script.extend([stop(), Step::Done]);
    let (base, up) = start_upstream(vec![script]).await;
    let app = app_with(base).await;
    let (_, before) = app
        .quant_post("acme/ai/agents/gpt/chat", &json!({"message": "start"}))
        .await;
    let sid = before["sessionId"].as_str().unwrap().to_owned();
    let res = app
        .client
        .post(app.quant("acme/ai/agents/gpt/chat"))
        .json(&json!({"message": "stream", "sessionId": sid, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    drop(stream);
    let mut closed = false;
    for _ in 0..20 {
        if up.abandoned.load(Ordering::SeqCst) {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the upstream saw its connection close");
    // No session update for the incomplete turn.
    let (_, detail) = app
        .quant_send(
            reqwest::Method::GET,
            &format!("acme/ai/sessions/{sid}"),
            None,
        )
        .await;
    assert_eq!(detail["messages"].as_array().unwrap().len(), 2, "{detail}");
}

#[tokio::test]
async fn quant_streams_and_stores_the_turn_and_early_errors_stay_json() {
    let (base, _up) = start_upstream(vec![vec![
        text("streamed "),
        text("answer"),
        stop(),
        usage(),
        Step::Done,
    ]])
    .await;
    let app = app_with(base).await;
    let res = app
        .client
        .post(app.quant("acme/ai/agents/gpt/chat"))
        .json(&json!({"message": "hi", "userId": "u1", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = read_events(res).await;
    let done = &events.last().unwrap().data;
    assert_eq!(events.last().unwrap().name, "done");
    assert_eq!(done["response"]["text"], "streamed answer");
    assert_eq!(
        done["response"]["usage"],
        json!({"inputTokens": 9, "outputTokens": 4})
    );
    let sid = done["sessionId"].as_str().unwrap();
    let (_, detail) = app
        .quant_send(
            reqwest::Method::GET,
            &format!("acme/ai/sessions/{sid}"),
            None,
        )
        .await;
    assert_eq!(
        detail["messages"][1],
        json!({"role": "assistant", "content": "streamed answer"})
    );

    let (status, err) = app
        .quant_post(
            "acme/ai/agents/nobody/chat",
            &json!({"message": "x", "stream": true}),
        )
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (404, Some("agent_not_found"))
    );
    let res = app.chat("p", &json!({"agentExternalId": "gpt", "messages": [text_message("x")], "cursor": "bad", "stream": true})).await;
    assert_eq!(
        res.status(),
        400,
        "errors before the first event are JSON responses"
    );
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_cursor"
    );
}

#[tokio::test]
async fn streamed_tool_calls_are_assembled_run_and_reported() {
    let call = |i: usize, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut f = json!({"arguments": args});
        if let Some(n) = name {
            f["name"] = json!(n);
        }
        let mut c = json!({"index": i, "function": f});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["type"] = json!("function");
        }
        Step::Chunk(
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [c]}, "finish_reason": null}]}),
        )
    };
    let step1 = vec![
        call(0, Some("c0"), Some("calculator"), "{\"expr"),
        call(1, Some("c1"), Some("calculator"), "{\"expression\":"),
        Step::Sleep(20),
        call(0, None, None, "ession\":\"2+2\"}"),
        call(1, None, None, "\"3*3\"}"),
        Step::Chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})),
        Step::Done,
    ];
    let step2 = vec![text("4 and 9"), stop(), Step::Done];
    let (base, _up) = start_upstream(vec![step1, step2]).await;
    let app = spawn_app_with(Options {
        upstream: Some(base),
        extra_toml: "[[agents]]\nid = \"tooly\"\nprovider = \"up\"\nmodel = \"m\"\ntools = [\"calculator\"]\n".into(),
        ..Default::default()
    })
    .await;
    let res = app.chat("p", &json!({"agentExternalId": "tooly", "messages": [text_message("sums")], "stream": true})).await;
    let events = read_events(res).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "tool_call",
            "tool_call",
            "tool_result",
            "tool_result",
            "delta",
            "usage",
            "done"
        ]
    );
    assert_eq!(
        events[0].data,
        json!({"id": "c0", "name": "calculator", "arguments": "{\"expression\":\"2+2\"}"})
    );
    assert_eq!(
        events[2].data,
        json!({"id": "c0", "name": "calculator", "ok": true})
    );
    assert_eq!(text_of(&events[6].data), "4 and 9");
}
