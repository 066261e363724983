//! Streamed chat completions: SSE parsed with `eventsource-stream`, text
//! forwarded as it arrives, tool-call fragments assembled by index, usage from
//! the final chunk. A stream that ends before a finish reason is an error,
//! never a silent success.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tokio::time::{Instant, timeout_at};

use super::wire::{Chunk, UsageIn};
use super::{EventStream, finish_reason, without_url};
use crate::domain::{ToolCall, Usage};
use crate::llm::{FinishReason, ProviderError, ProviderEvent};

/// Assembles a stream's chunks into provider events.
#[derive(Debug, Default)]
pub struct Assembler {
    calls: Vec<(String, String, String)>,
    finish: Option<Option<String>>,
    usage: Option<UsageIn>,
}

impl Assembler {
    /// Events available after `chunk` (text deltas).
    pub fn push(&mut self, chunk: Chunk) -> Result<Vec<ProviderEvent>, ProviderError> {
        if chunk.error.is_some() {
            return Err(ProviderError::Upstream(
                "error reported inside the stream".into(),
            ));
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let mut out = Vec::new();
        for choice in chunk.choices.into_iter().take(1) {
            let delta = choice.delta.unwrap_or_default();
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push(ProviderEvent::TextDelta(text));
            }
            for (n, d) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let index = d.index.unwrap_or(n);
                if self.calls.len() <= index {
                    self.calls.resize(index + 1, Default::default());
                }
                let slot = &mut self.calls[index];
                if let Some(id) = d.id.filter(|i| !i.is_empty()) {
                    slot.0 = id;
                }
                if let Some(f) = d.function {
                    if let Some(name) = f.name {
                        slot.1.push_str(&name);
                    }
                    if let Some(args) = f.arguments {
                        slot.2.push_str(&args);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                self.finish = Some(choice.finish_reason);
            }
        }
        Ok(out)
    }

    /// The closing events, once the stream has ended (`done`: `[DONE]` was seen).
    pub fn finish(self, done: bool) -> Result<Vec<ProviderEvent>, ProviderError> {
        if !done && self.finish.is_none() {
            return Err(ProviderError::Upstream(
                "the stream ended before the answer was complete".into(),
            ));
        }
        let calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .enumerate()
            .filter(|(_, c)| !c.1.is_empty())
            .map(|(i, (id, name, args))| ToolCall {
                id: if id.is_empty() {
                    format!("call_{i}")
                } else {
                    id
                },
                name,
                arguments: if args.trim().is_empty() {
                    "{}".into()
                } else {
                    args
                },
            })
            .collect();
        let finish = finish_reason(self.finish.flatten().as_deref(), !calls.is_empty());
        let usage = self.usage.unwrap_or_default();
        let mut out: Vec<ProviderEvent> = calls.into_iter().map(ProviderEvent::ToolCall).collect();
        out.push(ProviderEvent::Usage(Usage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        }));
        out.push(ProviderEvent::Finish(finish.unwrap_or(FinishReason::Stop)));
        Ok(out)
    }
}

/// The provider events of a streaming response, with the idle and total timeouts.
pub fn events(response: reqwest::Response, idle: Duration, deadline: Instant) -> EventStream {
    let mut sse = response.bytes_stream().eventsource();
    async_stream::try_stream! {
        let mut asm = Assembler::default();
        let mut done = false;
        loop {
            let until = deadline.min(Instant::now() + idle);
            let next = match timeout_at(until, sse.next()).await {
                Err(_) => Err(ProviderError::Timeout(if until < deadline { "idle" } else { "total" }))?,
                Ok(next) => next,
            };
            let Some(event) = next else { break };
            let event = event.map_err(|e| ProviderError::Upstream(format!("stream read failed: {}", match &e {
                eventsource_stream::EventStreamError::Transport(t) => without_url(t),
                other => other.to_string(),
            })))?;
            if event.data.trim() == "[DONE]" {
                done = true;
                break;
            }
            if event.data.trim().is_empty() {
                continue;
            }
            let chunk: Chunk = serde_json::from_str(&event.data)
                .map_err(|e| ProviderError::Upstream(format!("unparseable stream chunk: {e}")))?;
            for e in asm.push(chunk)? {
                yield e;
            }
        }
        for e in asm.finish(done)? {
            yield e;
        }
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str], done: bool) -> Result<Vec<ProviderEvent>, ProviderError> {
        let mut asm = Assembler::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(asm.push(serde_json::from_str(c).unwrap())?);
        }
        out.extend(asm.finish(done)?);
        Ok(out)
    }

    #[test]
    fn tool_call_fragments_are_assembled_by_index() {
        let out = run(
            &[
                r#"{"choices":[{"delta":{"role":"assistant","content":null}}]}"#,
                r#"{"choices":[{"delta":{"content":"Let me check. ","tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"get_weather","arguments":"{"}}]}}]}"#,
                r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"b","function":{"name":"clock","arguments":""}}]}}]}"#,
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"city\": \"Paris\"}"}}]}}]}"#,
                r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
                r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#,
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                ProviderEvent::TextDelta("Let me check. ".into()),
                ProviderEvent::ToolCall(ToolCall {
                    id: "a".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city": "Paris"}"#.into()
                }),
                ProviderEvent::ToolCall(ToolCall {
                    id: "b".into(),
                    name: "clock".into(),
                    arguments: "{}".into()
                }),
                ProviderEvent::Usage(Usage {
                    input_tokens: Some(7),
                    output_tokens: Some(3)
                }),
                ProviderEvent::Finish(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn a_stream_cut_before_its_end_is_an_error() {
        assert!(run(&[r#"{"choices":[{"delta":{"content":"Hel"}}]}"#], false).is_err());
        assert!(
            run(
                &[r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#],
                false
            )
            .is_ok()
        );
        assert!(run(&[r#"{"error":{"message":"overloaded"}}"#], false).is_err());
    }
}
