//! Hostile upstreams: a raw HTTP/1.1 server on loopback that answers whatever
//! bytes a test scripts (a tool-call index of four billion, a line that never
//! ends, an event that never ends, a redirect to another host), so that every
//! bound the gateway puts on an upstream is tried against one that breaks it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::*;
use crate::streaming::read_events;

/// What the raw upstream answers to each request.
#[derive(Clone)]
pub enum Script {
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
    /// Wait for (and use up) a permit of `release`, then write these bytes and close.
    Held(Vec<u8>, Arc<tokio::sync::Semaphore>),
    /// SSE response headers, then `piece` every `every_ms` (at most `count`
    /// times) until the gateway hangs up: a model producing tokens slowly.
    Trickle {
        piece: Vec<u8>,
        every_ms: u64,
        count: usize,
    },
    /// The n-th request (from 0) gets the n-th script; the last one repeats.
    Nth(Vec<Script>),
    /// SSE response headers and `prefix`, then `fill` in 64 KiB writes until
    /// the gateway hangs up or `max` bytes were written.
    Endless {
        prefix: Vec<u8>,
        fill: Vec<u8>,
        max: usize,
    },
}

/// A raw upstream: counts requests and, per connection, reports how many
/// body bytes it managed to write before the peer went away.
pub struct RawUpstream {
    pub base: String,
    pub hits: Arc<AtomicUsize>,
    written: mpsc::UnboundedReceiver<usize>,
}

impl RawUpstream {
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let (tx, written) = mpsc::unbounded_channel();
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let script = script.clone();
                let counter = counter.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    if read_request(&mut read).await.is_none() {
                        return;
                    }
                    let nth = counter.fetch_add(1, Ordering::SeqCst);
                    let script = match script {
                        Script::Nth(list) => list
                            .get(nth)
                            .or(list.last())
                            .cloned()
                            .unwrap_or(Script::Bytes(Vec::new())),
                        other => other,
                    };
                    let n = match script {
                        Script::Nth(_) => 0,
                        Script::Trickle {
                            piece,
                            every_ms,
                            count,
                        } => trickle(&mut write, &piece, every_ms, count).await,
                        Script::Bytes(bytes) => {
                            let _ = write.write_all(&bytes).await;
                            bytes.len()
                        }
                        Script::Held(bytes, release) => {
                            // Each answer uses up one permit: a released
                            // permit must not let a later request through.
                            if let Ok(permit) = release.acquire().await {
                                permit.forget();
                            }
                            let _ = write.write_all(&bytes).await;
                            bytes.len()
                        }
                        Script::Endless { prefix, fill, max } => {
                            endless(&mut write, &prefix, &fill, max).await
                        }
                    };
                    let _ = write.shutdown().await;
                    let _ = tx.send(n);
                });
            }
        });
        Self {
            base,
            hits,
            written,
        }
    }

    /// Bytes written on the next connection to end (bounded wait).
    pub async fn next_written(&mut self) -> usize {
        tokio::time::timeout(Duration::from_secs(60), self.written.recv())
            .await
            .expect("the upstream connection ended")
            .expect("the upstream is running")
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Wait (bounded) until `n` requests have arrived.
    pub async fn wait_hits(&self, n: usize) {
        for _ in 0..1000 {
            if self.hits() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the upstream never received {n} requests");
    }
}

/// Read one request's head and body (`Content-Length` only).
async fn read_request(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<()> {
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    read.read_exact(&mut body).await.ok()?;
    Some(())
}

async fn trickle(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    piece: &[u8],
    every_ms: u64,
    count: usize,
) -> usize {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if write.write_all(head).await.is_err() {
        return 0;
    }
    let mut written = 0;
    for _ in 0..count {
        if write.write_all(piece).await.is_err() {
            break;
        }
        written += piece.len();
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
    }
    written
}

async fn endless(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    prefix: &[u8],
    fill: &[u8],
    max: usize,
) -> usize {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if write.write_all(head).await.is_err() || write.write_all(prefix).await.is_err() {
        return 0;
    }
    let chunk: Vec<u8> = fill.iter().copied().cycle().take(64 * 1024).collect();
    let mut written = prefix.len();
    while written < max {
        if write.write_all(&chunk).await.is_err() {
            break;
        }
        written += chunk.len();
    }
    written
}

/// An OpenAI upstream whose every answer (a completion saying `text`) waits
/// for a permit of the returned semaphore, which starts with `permits`.
pub async fn held_completion(
    text: &str,
    permits: usize,
) -> (RawUpstream, Arc<tokio::sync::Semaphore>) {
    let release = Arc::new(tokio::sync::Semaphore::new(permits));
    let body = completion(text).to_string();
    let upstream = RawUpstream::start(Script::Held(
        http("200 OK", &[("content-type", "application/json")], &body),
        release.clone(),
    ))
    .await;
    (upstream, release)
}

/// An HTTP/1.1 response head and body.
pub fn http(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// An SSE response carrying `events` (each a `data:` payload).
fn sse(events: &[Value]) -> Vec<u8> {
    let mut body = String::new();
    for e in events {
        body.push_str(&format!("data: {e}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    http("200 OK", &[("content-type", "text/event-stream")], &body)
}

async fn app_on(base: &str, provider: &str) -> TestApp {
    spawn_app_with(Options {
        upstream: Some(base.to_owned()),
        provider_toml: provider.to_owned(),
        ..Default::default()
    })
    .await
}

/// A streamed turn that must fail: a JSON error (502) when it fails before
/// the first event, else a final `error` event. Returns whether it failed
/// mid-stream, and the error body (the same shape either way).
async fn streamed_failure(app: &TestApp) -> (bool, Value) {
    let body = json!({"agentExternalId": "gpt", "messages": [text_message("hi")], "stream": true});
    let res = app.chat("p", &body).await;
    if res.status() != 200 {
        assert_eq!(res.status(), 502);
        return (false, res.json().await.expect("a JSON error"));
    }
    let events = read_events(res).await;
    let last = events.last().expect("events");
    assert_eq!(last.name, "error", "{events:?}");
    (true, last.data.clone())
}

async fn streamed_error(app: &TestApp) -> Value {
    streamed_failure(app).await.1
}

#[tokio::test]
async fn a_tool_call_index_of_four_billion_fails_the_turn_and_the_replica_lives_on() {
    let chunk = json!({"choices": [{"delta": {"tool_calls": [
        {"index": 4_000_000_000u64, "id": "a", "type": "function",
         "function": {"name": "clock", "arguments": "{}"}}
    ]}}]});
    let up = RawUpstream::start(Script::Bytes(sse(&[chunk]))).await;
    let app = app_on(&up.base, "").await;
    let error = streamed_error(&app).await;
    assert_eq!(error["error"]["type"], "upstream_error", "{error}");
    // Still serving: the process was not aborted by a huge allocation.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let (status, body) = app.say("p", "echo", "still here?", None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_endless_line_fails_at_the_event_bound_and_the_connection_is_dropped() {
    let mut up = RawUpstream::start(Script::Endless {
        prefix: b"data: ".to_vec(),
        fill: b"x".to_vec(),
        max: 256 * 1024 * 1024,
    })
    .await;
    let app = app_on(&up.base, "max_event_bytes = 65536").await;
    let error = streamed_error(&app).await;
    assert_eq!(error["error"]["type"], "upstream_error", "{error}");
    let written = up.next_written().await;
    // The bound is 64 KiB; what got past it is only what the sockets buffered.
    assert!(
        written < 32 * 1024 * 1024,
        "the gateway kept reading: {written} bytes"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);

    // Not streamed: the same bound, a 502 in the Cognite format.
    let (status, body) = app.say("p", "gpt", "hi", None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error");
}

#[tokio::test]
async fn an_event_of_endless_short_lines_and_an_endless_stream_of_events_are_bounded() {
    // Many lines, never a blank one: one event that never ends.
    let mut up = RawUpstream::start(Script::Endless {
        prefix: Vec::new(),
        fill: b": comment line\n".to_vec(),
        max: 256 * 1024 * 1024,
    })
    .await;
    let app = app_on(&up.base, "max_event_bytes = 65536").await;
    let error = streamed_error(&app).await;
    assert_eq!(error["error"]["type"], "upstream_error", "{error}");
    assert!(up.next_written().await < 32 * 1024 * 1024);

    // Small complete events forever: the response bound ends it.
    let event = json!({"choices": [{"delta": {"content": ""}}]});
    let mut up = RawUpstream::start(Script::Endless {
        prefix: Vec::new(),
        fill: format!("data: {event}\n\n").into_bytes(),
        max: 256 * 1024 * 1024,
    })
    .await;
    let app = app_on(&up.base, "max_response_bytes = 1048576").await;
    let error = streamed_error(&app).await;
    assert_eq!(error["error"]["type"], "upstream_error", "{error}");
    assert!(up.next_written().await < 32 * 1024 * 1024);
}

#[tokio::test]
async fn streamed_tool_call_arguments_are_bounded() {
    let piece = "x".repeat(800);
    let mut chunks = vec![json!({"choices": [{"delta": {"content": "Let me see. "}}]})];
    chunks.extend((0..3).map(|i| {
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": if i == 0 { "c" } else { "" },
            "function": {"name": if i == 0 { "clock" } else { "" }, "arguments": piece}}]}}]})
    }));
    let up = RawUpstream::start(Script::Bytes(sse(&chunks))).await;
    let app = app_on(&up.base, "max_tool_call_bytes = 2048").await;
    let (mid_stream, error) = streamed_failure(&app).await;
    assert!(
        mid_stream,
        "text was forwarded first, so the failure is an event"
    );
    assert_eq!(error["error"]["type"], "upstream_error", "{error}");
}

#[tokio::test]
async fn a_non_streamed_body_larger_than_the_bound_is_refused_before_it_is_read() {
    let mut up = RawUpstream::start(Script::Endless {
        prefix: b"{\"choices\": [".to_vec(),
        fill: b"{}, ".to_vec(),
        max: 256 * 1024 * 1024,
    })
    .await;
    let app = app_on(&up.base, "max_response_bytes = 1048576").await;
    let (status, body) = app.say("p", "gpt", "hi", None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error");
    assert!(up.next_written().await < 32 * 1024 * 1024);
}

#[tokio::test]
async fn a_provider_redirect_is_not_followed_and_the_key_goes_nowhere_else() {
    let other = RawUpstream::start(Script::Bytes(http("200 OK", &[], "{}"))).await;
    let location = format!("{}/chat/completions", other.base);
    let up = RawUpstream::start(Script::Bytes(http(
        "307 Temporary Redirect",
        &[("location", &location)],
        "",
    )))
    .await;
    let app = app_on(&up.base, "").await;
    let (status, body) = app.say("p", "gpt", "hi", None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error");
    assert_eq!(up.hits(), 1);

    // Anthropic sends its key as x-api-key, which reqwest would not strip.
    let anthropic_location = format!("{}/messages", other.base);
    let up = RawUpstream::start(Script::Bytes(http(
        "308 Permanent Redirect",
        &[("location", &anthropic_location)],
        "",
    )))
    .await;
    let app = spawn_app_with(Options {
        extra_toml: format!(
            "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"{}\"\n\
             api_key_env = \"TEST_UPSTREAM_KEY\"\nmax_retries = 0\n\n\
             [[agents]]\nid = \"claude\"\nprovider = \"a\"\nmodel = \"claude-test\"\n",
            up.base
        ),
        ..Default::default()
    })
    .await;
    let (status, body) = app.say("p", "claude", "hi", None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(up.hits(), 1);
    assert_eq!(other.hits(), 0, "the redirect target never heard from us");
}

#[tokio::test]
async fn an_mcp_server_redirect_is_not_followed_with_its_headers() {
    let other = RawUpstream::start(Script::Bytes(http("200 OK", &[], "{}"))).await;
    let up = RawUpstream::start(Script::Bytes(http(
        "307 Temporary Redirect",
        &[("location", &other.base)],
        "",
    )))
    .await;
    let model = openai_upstream("done").await;
    let app = spawn_app_with(Options {
        upstream: Some(format!("{}/v1", model.uri())),
        extra_toml: format!(
            "[[tools]]\nname = \"remote\"\nkind = \"mcp\"\nurl = \"{}/mcp\"\ntimeout_ms = 5000\n\
             headers = {{ x-secret = \"s3cret\" }}\n\n\
             [[agents]]\nid = \"mcp-agent\"\nprovider = \"up\"\nmodel = \"m\"\ntools = [\"remote\"]\n",
            up.base
        ),
        ..Default::default()
    })
    .await;
    // The first turn of an agent using the server waits for a discovery
    // attempt: by the time it answers, the redirect has been seen.
    let (status, body) = app.say("p", "mcp-agent", "hi", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(up.hits() >= 1, "discovery reached the server");
    assert_eq!(other.hits(), 0, "the redirect target never heard from us");
}

#[tokio::test]
async fn a_declared_content_length_past_the_bound_is_refused_without_reading_or_retrying() {
    // Declares 100 MiB, sends nothing and closes: read, this would be a cut
    // body (retried); refused from the header, it is one attempt.
    let up = RawUpstream::start(Script::Bytes(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\nconnection: close\r\n\r\n".to_vec(),
    ))
    .await;
    let app = app_on(&up.base, "max_response_bytes = 1048576\nmax_retries = 2").await;
    let (status, body) = app.say("p", "gpt", "hi", None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error");
    assert_eq!(up.hits(), 1, "refused at the header, not retried");
}
