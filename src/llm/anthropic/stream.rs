//! Streamed Messages: named SSE events (`message_start`,
//! `content_block_start/delta/stop`, `message_delta`, `message_stop`, `ping`,
//! `error`) assembled into provider events. Text is forwarded as it arrives;
//! tool calls (`input_json_delta` fragments) and thinking blocks
//! (`thinking_delta`, `signature_delta`) when their block stops; usage as
//! increments over what was already reported, so an attempt cut short still
//! reports what it was billed. A stream without `message_stop` is an error.

use eventsource_stream::Event;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

use super::wire::{self, UsageIn};
use super::{canonical_arguments, finish_reason, reasoning, usage};
use crate::domain::{ToolCall, Usage};
use crate::llm::http::Limits;
use crate::llm::{EventStream, MAX_TOOL_CALLS, ProviderError, ProviderEvent};

/// Most content blocks one streamed message may have (text, thinking and tool
/// use together); a block's `index` is checked against it before anything is
/// allocated for it.
pub const MAX_BLOCKS: usize = 4 * MAX_TOOL_CALLS;

#[derive(Debug)]
enum Block {
    Text,
    ToolUse {
        id: String,
        name: String,
        json: String,
        initial: Value,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
    Redacted(Value),
    Other,
}

/// Assembles a stream's events into provider events.
#[derive(Debug, Default)]
pub struct Assembler {
    blocks: Vec<Option<Block>>,
    usage: UsageIn,
    reported: Usage,
    calls: usize,
    stop_reason: Option<String>,
    done: bool,
    limits: Limits,
}

fn bad(what: &str, e: serde_json::Error) -> ProviderError {
    ProviderError::Upstream(format!("unparseable {what} event: {e}"))
}

impl Assembler {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Events available after the SSE event `name` with `data`.
    pub fn push(&mut self, name: &str, data: &str) -> Result<Vec<ProviderEvent>, ProviderError> {
        let mut out = Vec::new();
        match name {
            "message_start" => {
                let start: wire::MessageStart =
                    serde_json::from_str(data).map_err(|e| bad(name, e))?;
                if let Some(u) = start.message.usage {
                    self.usage.merge(u);
                    self.report(&mut out);
                }
            }
            "content_block_start" => {
                let start: wire::BlockStart =
                    serde_json::from_str(data).map_err(|e| bad(name, e))?;
                let b = start.content_block;
                let block = match b["type"].as_str() {
                    Some("text") => {
                        if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(ProviderEvent::TextDelta(t.to_owned()));
                        }
                        Block::Text
                    }
                    Some("tool_use") => Block::ToolUse {
                        id: b["id"].as_str().unwrap_or_default().to_owned(),
                        name: b["name"].as_str().unwrap_or_default().to_owned(),
                        json: String::new(),
                        initial: b["input"].clone(),
                    },
                    Some("thinking") => Block::Thinking {
                        thinking: b["thinking"].as_str().unwrap_or_default().to_owned(),
                        signature: b["signature"].as_str().unwrap_or_default().to_owned(),
                    },
                    Some("redacted_thinking") => Block::Redacted(b),
                    _ => Block::Other,
                };
                if start.index >= MAX_BLOCKS {
                    return Err(ProviderError::Upstream(format!(
                        "content block index {} is past the limit of {MAX_BLOCKS} blocks",
                        start.index
                    )));
                }
                if self.blocks.len() <= start.index {
                    self.blocks.resize_with(start.index + 1, || None);
                }
                self.blocks[start.index] = Some(block);
            }
            "content_block_delta" => {
                let delta: wire::BlockDelta =
                    serde_json::from_str(data).map_err(|e| bad(name, e))?;
                let d = &delta.delta;
                let block = self.blocks.get_mut(delta.index).and_then(Option::as_mut);
                match (d["type"].as_str(), block) {
                    (Some("text_delta"), _) => {
                        if let Some(t) = d["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(ProviderEvent::TextDelta(t.to_owned()));
                        }
                    }
                    (Some("input_json_delta"), Some(Block::ToolUse { json, .. })) => {
                        let part = d["partial_json"].as_str().unwrap_or_default();
                        self.limits.append(json, part)?;
                    }
                    (Some("thinking_delta"), Some(Block::Thinking { thinking, .. })) => {
                        let part = d["thinking"].as_str().unwrap_or_default();
                        self.limits.append(thinking, part)?;
                    }
                    (Some("signature_delta"), Some(Block::Thinking { signature, .. })) => {
                        let part = d["signature"].as_str().unwrap_or_default();
                        self.limits.append(signature, part)?;
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let stop: wire::BlockStop = serde_json::from_str(data).map_err(|e| bad(name, e))?;
                match self.blocks.get_mut(stop.index).and_then(Option::take) {
                    Some(Block::ToolUse {
                        id,
                        name,
                        json,
                        initial,
                    }) => {
                        let arguments = if json.trim().is_empty() {
                            canonical_arguments(&initial.to_string())
                        } else {
                            canonical_arguments(&json)
                        };
                        if self.calls >= MAX_TOOL_CALLS {
                            return Err(ProviderError::Upstream(format!(
                                "more than {MAX_TOOL_CALLS} tool calls in one answer"
                            )));
                        }
                        let id = if id.is_empty() {
                            format!("toolu_{}", self.calls)
                        } else {
                            id
                        };
                        self.calls += 1;
                        out.push(ProviderEvent::ToolCall(ToolCall {
                            id,
                            name,
                            arguments,
                        }));
                    }
                    Some(Block::Thinking {
                        thinking,
                        signature,
                    }) => out.push(ProviderEvent::Reasoning(reasoning(&json!({
                        "type": "thinking",
                        "thinking": thinking,
                        "signature": signature,
                    })))),
                    Some(Block::Redacted(b)) => out.push(ProviderEvent::Reasoning(reasoning(&b))),
                    Some(Block::Text | Block::Other) | None => {}
                }
            }
            "message_delta" => {
                let delta: wire::MessageDelta =
                    serde_json::from_str(data).map_err(|e| bad(name, e))?;
                if let Some(r) = delta.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(r);
                }
                if let Some(u) = delta.usage {
                    self.usage.merge(u);
                    self.report(&mut out);
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let kind = serde_json::from_str::<wire::ErrorEvent>(data)
                    .map(|e| e.error.kind)
                    .unwrap_or_default();
                return Err(match kind.as_str() {
                    "overloaded_error" => ProviderError::Overloaded { retry_after: None },
                    "rate_limit_error" => ProviderError::RateLimited { retry_after: None },
                    "api_error" | "timeout_error" => {
                        ProviderError::Transient(format!("in-stream {kind}"))
                    }
                    "invalid_request_error" | "request_too_large" => {
                        ProviderError::Rejected { status: 400 }
                    }
                    _ => ProviderError::Upstream(format!("in-stream error {kind:?}")),
                });
            }
            // `ping` and event types added after this was written.
            _ => {}
        }
        Ok(out)
    }

    /// Report usage not reported yet.
    fn report(&mut self, out: &mut Vec<ProviderEvent>) {
        let now = usage(self.usage);
        let diff = |n: Option<u64>, r: Option<u64>| n.map(|n| n.saturating_sub(r.unwrap_or(0)));
        let increment = Usage {
            input_tokens: diff(now.input_tokens, self.reported.input_tokens),
            output_tokens: diff(now.output_tokens, self.reported.output_tokens),
            cache_read_tokens: diff(now.cache_read_tokens, self.reported.cache_read_tokens),
            cache_write_tokens: diff(now.cache_write_tokens, self.reported.cache_write_tokens),
        };
        self.reported = now;
        if !increment.is_empty() {
            out.push(ProviderEvent::Usage(increment));
        }
    }

    /// The closing event, once the stream has ended.
    pub fn finish(self) -> Result<ProviderEvent, ProviderError> {
        if !self.done {
            return Err(ProviderError::Transient(
                "the stream ended before message_stop".into(),
            ));
        }
        Ok(ProviderEvent::Finish(finish_reason(
            self.stop_reason.as_deref(),
            self.calls > 0,
        )))
    }
}

/// The provider events of a streaming response's SSE events.
pub fn events(
    sse: impl Stream<Item = Result<Event, ProviderError>> + Send + 'static,
    limits: Limits,
) -> EventStream {
    async_stream::try_stream! {
        let mut sse = std::pin::pin!(sse);
        let mut asm = Assembler::new(limits);
        while let Some(event) = sse.next().await {
            let event = event?;
            if event.data.trim().is_empty() {
                continue;
            }
            let name = if event.event.is_empty() || event.event == "message" {
                // Servers that omit `event:` still name the type in the data.
                serde_json::from_str::<Value>(&event.data)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            } else {
                event.event
            };
            for e in asm.push(&name, &event.data)? {
                yield e;
            }
            if asm.done {
                break;
            }
        }
        yield asm.finish()?;
    }
    .boxed()
}
