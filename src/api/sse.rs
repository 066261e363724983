//! Server-sent events rendered from a turn's [`RunEvent`]s, the same for both
//! APIs. Events: `delta` `{"text"}`, `tool_call` `{id, name, arguments}`,
//! `tool_result` `{id, name, ok}`, `action` (a Cognite action call), `usage`
//! `{inputTokens, outputTokens}`, then exactly one of `done` (the body the
//! non-streaming call would return) or `error` (the API's error body). Every
//! event has an `id:`; a keep-alive comment follows the first event, then
//! comes every 15 s on a fixed clock (events do not reset it);
//! each event is flushed as it is produced, never compressed. If the client
//! disconnects, the stream (and with it the upstream call) is dropped and
//! nothing is written.

use std::future::Future;
use std::time::Duration;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, Responder};
use actix_web_lab::sse;
use futures_util::{FutureExt, Stream, StreamExt};
use serde_json::json;

use crate::domain::PendingAction;
use crate::error::ApiError;
use crate::runtime::{RunEvent, TurnOutcome};

pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How an API shape finishes and renders a streamed turn.
pub struct Renderer<F, A> {
    /// Seal/store the outcome and produce the `done` body.
    pub finish: F,
    /// Render a pending action as the API shows it.
    pub action: A,
    /// The API's error body.
    pub error_body: fn(&ApiError, &str) -> String,
    pub request_id: String,
}

/// Whether a request asks for a stream (`Accept: text/event-stream`).
pub fn accepts_event_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// Answer with SSE. An error before the first event is returned as `Err`, so
/// that it becomes an ordinary JSON error response with its status.
pub async fn respond<S, F, Fut, A>(
    req: &HttpRequest,
    events: S,
    r: Renderer<F, A>,
) -> Result<HttpResponse, ApiError>
where
    S: Stream<Item = RunEvent> + 'static,
    F: FnOnce(TurnOutcome) -> Fut + 'static,
    Fut: Future<Output = Result<String, ApiError>> + 'static,
    A: Fn(&PendingAction) -> serde_json::Value + 'static,
{
    let mut events = Box::pin(events);
    let first = events.next().await;
    if let Some(RunEvent::Error(e)) = first {
        return Err(e.into());
    }
    let Renderer {
        finish,
        action,
        error_body,
        request_id,
    } = r;
    let drained = req
        .app_data::<actix_web::web::Data<crate::app::AppState>>()
        .map(|state| state.drained().boxed())
        .unwrap_or_else(|| futures_util::future::pending().boxed());
    let started = req
        .extensions()
        .get::<crate::api::request_id::RequestStart>()
        .map(|s| s.0);
    let stream = async_stream::stream! {
        let mut started = started;
        let mut next_id = 0u64;
        let mut first = first;
        let mut finish = Some(finish);
        let mut drained = drained;
        loop {
            let event = match first.take() {
                Some(e) => Some(e),
                None => tokio::select! {
                    e = events.next() => e,
                    // The replica is stopping: end the stream with an error
                    // the client can retry on, before the workers cut it.
                    () = &mut drained => {
                        next_id += 1;
                        let body = error_body(&crate::app::shutting_down(), &request_id);
                        yield sse::Event::Data(sse::Data::new(body).event("error").id(next_id.to_string()));
                        break;
                    }
                },
            };
            let Some(event) = event else { break };
            let (name, data) = match event {
                RunEvent::TextDelta(text) => {
                    if let Some(at) = started.take() {
                        crate::observe::time_to_first_token(at.elapsed().as_secs_f64());
                    }
                    ("delta", json!({"text": text}).to_string())
                }
                RunEvent::ToolCall(c) => ("tool_call", json!({"id": c.id, "name": c.name, "arguments": c.arguments}).to_string()),
                RunEvent::ToolResult { id, name, ok } => ("tool_result", json!({"id": id, "name": name, "ok": ok}).to_string()),
                RunEvent::Action(p) => ("action", action(&p).to_string()),
                RunEvent::Usage(u) => {
                    let mut v = json!({});
                    for (name, value) in [
                        ("inputTokens", u.input_tokens),
                        ("outputTokens", u.output_tokens),
                        ("cacheReadTokens", u.cache_read_tokens),
                        ("cacheWriteTokens", u.cache_write_tokens),
                    ] {
                        if let Some(n) = value {
                            v[name] = json!(n);
                        }
                    }
                    ("usage", v.to_string())
                }
                RunEvent::Done(outcome) => match finish.take() {
                    Some(f) => match f(*outcome).await {
                        Ok(body) => ("done", body),
                        Err(e) => ("error", error_body(&e, &request_id)),
                    },
                    None => break,
                },
                RunEvent::Error(e) => ("error", error_body(&ApiError::from(e), &request_id)),
            };
            next_id += 1;
            let end = name == "done" || name == "error";
            yield sse::Event::Data(sse::Data::new(data).event(name).id(next_id.to_string()));
            if end {
                break;
            }
        }
    };
    Ok(sse::Sse::from_infallible_stream(stream)
        .with_keep_alive(KEEP_ALIVE)
        .customize()
        .insert_header(("X-Accel-Buffering", "no"))
        .respond_to(req)
        .map_into_boxed_body())
}
