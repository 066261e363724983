//! A mock Anthropic Messages API: a real HTTP server that answers scripted
//! replies as a JSON message, or, when the request asks to stream, as the
//! named SSE events of the same message (text and tool input split into
//! several deltas, thinking with a signature delta), with faults on demand.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// What goes wrong in a streamed reply, after its first `after` events.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Stop sending for this long (then carry on).
    Stall(u64),
    /// Drop the connection.
    Die,
    /// Send an in-stream `overloaded_error`.
    Overloaded,
}

/// One scripted reply.
#[derive(Clone, Debug)]
pub enum Reply {
    Message(Value),
    /// A status with an error body, and optionally a `Retry-After`.
    Status(u16, Option<&'static str>),
    /// Wait this long before answering `Message`.
    Late(u64, Value),
    /// Stream the message with a fault.
    Faulty(Value, usize, Fault),
}

/// A request the mock received.
#[derive(Clone, Debug)]
pub struct Received {
    pub api_key: Option<String>,
    pub version: Option<String>,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct Mock {
    script: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
    pub base: String,
}

impl Mock {
    /// Queue replies; once the queue is empty the mock answers "default answer".
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// A message answering `text`.
pub fn message(text: &str) -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 4, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    })
}

/// A message that thinks, says something and calls a tool.
pub fn tool_message(id: &str, name: &str, input: Value) -> Value {
    json!({
        "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [
            {"type": "thinking", "thinking": "I should use the tool.", "signature": "c2lnbmF0dXJl"},
            {"type": "text", "text": "Let me work that out."},
            {"type": "tool_use", "id": id, "name": name, "input": input}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 30, "output_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}
    })
}

fn split(s: &str) -> Vec<String> {
    let mid = s
        .char_indices()
        .nth(s.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    vec![s[..mid].to_owned(), s[mid..].to_owned()]
}

/// The SSE events of `message`, as the real API streams it.
pub fn sse_events(message: &Value) -> Vec<(String, Value)> {
    let usage = &message["usage"];
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let mut out = vec![(
        "message_start".to_owned(),
        json!({"type": "message_start", "message": {
            "id": message["id"], "type": "message", "role": "assistant", "model": message["model"],
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
    )];
    for (index, block) in message["content"].as_array().unwrap().iter().enumerate() {
        let (start, deltas): (Value, Vec<Value>) = match block["type"].as_str().unwrap() {
            "text" => (
                json!({"type": "text", "text": ""}),
                split(block["text"].as_str().unwrap())
                    .into_iter()
                    .map(|t| json!({"type": "text_delta", "text": t}))
                    .collect(),
            ),
            "tool_use" => (
                json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
                split(&serde_json::to_string_pretty(&block["input"]).unwrap())
                    .into_iter()
                    .map(|j| json!({"type": "input_json_delta", "partial_json": j}))
                    .collect(),
            ),
            "thinking" => (
                json!({"type": "thinking", "thinking": ""}),
                split(block["thinking"].as_str().unwrap())
                    .into_iter()
                    .map(|t| json!({"type": "thinking_delta", "thinking": t}))
                    .chain([json!({"type": "signature_delta", "signature": block["signature"]})])
                    .collect(),
            ),
            other => panic!("the mock cannot stream {other} blocks"),
        };
        out.push((
            "content_block_start".into(),
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        out.push(("ping".into(), json!({"type": "ping"})));
        for d in deltas {
            out.push((
                "content_block_delta".into(),
                json!({"type": "content_block_delta", "index": index, "delta": d}),
            ));
        }
        out.push((
            "content_block_stop".into(),
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push((
        "message_delta".into(),
        json!({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": null},
               "usage": {"output_tokens": usage["output_tokens"]}}),
    ));
    out.push(("message_stop".into(), json!({"type": "message_stop"})));
    out
}

fn frame(name: &str, data: &Value) -> web::Bytes {
    web::Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn stream(message: Value, fault: Option<(usize, Fault)>) -> HttpResponse {
    let events = sse_events(&message);
    let body = async_stream::stream! {
        for (i, (name, data)) in events.iter().enumerate() {
            if let Some((after, f)) = &fault && i == *after {
                match f {
                    Fault::Stall(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                    Fault::Die => {
                        yield Err(actix_web::error::ErrorInternalServerError("dying"));
                        return;
                    }
                    Fault::Overloaded => {
                        yield Ok(frame("error", &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
                        return;
                    }
                }
            }
            yield Ok::<_, actix_web::Error>(frame(name, data));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(body)
}

async fn messages(mock: web::Data<Mock>, req: HttpRequest, body: web::Json<Value>) -> HttpResponse {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    mock.received.lock().unwrap().push(Received {
        api_key: header("x-api-key"),
        version: header("anthropic-version"),
        body: body.0.clone(),
    });
    let reply = mock
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| Reply::Message(message("default answer")));
    let streaming = body["stream"] == true;
    match reply {
        Reply::Message(m) if streaming => stream(m, None),
        Reply::Message(m) => HttpResponse::Ok().json(m),
        Reply::Late(ms, m) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if streaming {
                stream(m, None)
            } else {
                HttpResponse::Ok().json(m)
            }
        }
        Reply::Faulty(m, after, fault) => stream(m, Some((after, fault))),
        Reply::Status(status, retry_after) => {
            let kind = match status {
                429 => "rate_limit_error",
                529 => "overloaded_error",
                400 => "invalid_request_error",
                _ => "api_error",
            };
            let mut res =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(r) = retry_after {
                res.insert_header(("retry-after", r));
            }
            res.json(json!({"type": "error", "error": {"type": kind, "message": "MOCK-UPSTREAM-DETAIL"}}))
        }
    }
}

/// Start a mock on a free loopback port.
pub async fn start() -> Mock {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mock = Mock {
        base: format!("http://127.0.0.1:{port}/v1"),
        ..Default::default()
    };
    let data = web::Data::new(mock.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::JsonConfig::default().limit(16 * 1024 * 1024))
            .route("/v1/messages", web::post().to(messages))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    mock
}

/// Config for a provider `name` on `mock`, plus `extra` provider keys.
pub fn provider_toml(name: &str, mock: &Mock, extra: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{name}"
kind = "anthropic"
base_url = "{base}"
api_key_env = "TEST_UPSTREAM_KEY"
{extra}
"#,
        base = mock.base
    )
}

/// Config for agent `id` on `provider`, plus `extra` agent keys
/// (`max_tokens = 512` unless `extra` sets it).
pub fn agent_toml(id: &str, provider: &str, extra: &str) -> String {
    let max_tokens = if extra.contains("max_tokens") {
        ""
    } else {
        "max_tokens = 512"
    };
    format!(
        r#"
[[agents]]
id = "{id}"
provider = "{provider}"
model = "claude-test"
system_prompt = "{prompt}"
{max_tokens}
{extra}
"#,
        prompt = crate::helpers::SYSTEM_PROMPT
    )
}
