//! Streamed chat completions: SSE parsed with `eventsource-stream`, text
//! forwarded as it arrives, tool-call fragments assembled by index, usage from
//! the final chunk. A stream that ends before a finish reason is an error,
//! never a silent success.

use eventsource_stream::Event;
use futures_util::{Stream, StreamExt};

use super::wire::{Chunk, UsageIn};
use super::{EventStream, finish_reason, usage};
use crate::domain::ToolCall;
use crate::llm::http::Limits;
use crate::llm::{FinishReason, MAX_TOOL_CALLS, ProviderError, ProviderEvent};

/// Assembles a stream's chunks into provider events. Tool-call slots are
/// indexed by the upstream's `index`, which is checked against
/// [`MAX_TOOL_CALLS`] before anything is allocated for it.
#[derive(Debug, Default)]
pub struct Assembler {
    calls: Vec<(String, String, String)>,
    finish: Option<Option<String>>,
    usage: Option<UsageIn>,
    limits: Limits,
}

impl Assembler {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Events available after `chunk` (text deltas).
    pub fn push(&mut self, chunk: Chunk) -> Result<Vec<ProviderEvent>, ProviderError> {
        if chunk.error.is_some() {
            return Err(ProviderError::Transient(
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
                if index >= MAX_TOOL_CALLS {
                    return Err(ProviderError::Upstream(format!(
                        "tool call index {index} is past the limit of {MAX_TOOL_CALLS} calls"
                    )));
                }
                if self.calls.len() <= index {
                    self.calls.resize(index + 1, Default::default());
                }
                let slot = &mut self.calls[index];
                if let Some(id) = d.id.filter(|i| !i.is_empty()) {
                    slot.0 = id;
                }
                if let Some(f) = d.function {
                    if let Some(name) = f.name {
                        self.limits.append(&mut slot.1, &name)?;
                    }
                    if let Some(args) = f.arguments {
                        self.limits.append(&mut slot.2, &args)?;
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
            return Err(ProviderError::Transient(
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
        let mut out: Vec<ProviderEvent> = calls.into_iter().map(ProviderEvent::ToolCall).collect();
        out.push(ProviderEvent::Usage(usage(self.usage.unwrap_or_default())));
        out.push(ProviderEvent::Finish(finish.unwrap_or(FinishReason::Stop)));
        Ok(out)
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
        let mut done = false;
        while let Some(event) = sse.next().await {
            let event = event?;
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
                ProviderEvent::Usage(crate::domain::Usage {
                    input_tokens: Some(7),
                    output_tokens: Some(3),
                    ..Default::default()
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

    #[test]
    fn hostile_indexes_and_sizes_fail_without_allocating() {
        let err = run(
            &[r#"{"choices":[{"delta":{"tool_calls":[{"index":4000000000,"id":"a","function":{"name":"f","arguments":"{}"}}]}}]}"#],
            true,
        )
        .unwrap_err();
        assert!(matches!(err, ProviderError::Upstream(_)), "{err:?}");
        let last = format!(
            r#"{{"choices":[{{"delta":{{"tool_calls":[{{"index":{},"function":{{"name":"f"}}}}]}}}}]}}"#,
            MAX_TOOL_CALLS - 1
        );
        assert!(run(&[&last], true).is_ok(), "the last allowed index works");

        let mut asm = Assembler::new(Limits {
            tool_call: 1024,
            ..Limits::default()
        });
        let piece = format!(
            r#"{{"choices":[{{"delta":{{"tool_calls":[{{"index":0,"function":{{"name":"f","arguments":"{}"}}}}]}}}}]}}"#,
            "x".repeat(600)
        );
        asm.push(serde_json::from_str(&piece).unwrap()).unwrap();
        let err = asm.push(serde_json::from_str(&piece).unwrap()).unwrap_err();
        assert!(matches!(err, ProviderError::Upstream(_)), "{err:?}");
    }
}

#[cfg(test)]
mod property_tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A hostile upstream's chunks (any shape, any index, any sizes):
        /// the assembler answers events or an error, never a panic, and
        /// never holds more than the bounds allow.
        #[test]
        fn any_chunks_are_assembled_or_refused_without_panicking(
            chunks in prop::collection::vec(crate::testkit::json(), 0..12),
            index in any::<u64>(),
        ) {
            let mut asm = Assembler::new(Limits { tool_call: 4096, ..Limits::default() });
            let mut failed = false;
            let mut all = chunks;
            all.push(serde_json::json!({"choices": [{"delta": {"tool_calls": [{"index": index, "function": {"name": "f", "arguments": "{}"}}]}}]}));
            for c in all {
                let Ok(chunk) = serde_json::from_value::<Chunk>(c) else { continue };
                if asm.push(chunk).is_err() {
                    failed = true;
                    break;
                }
            }
            prop_assert!(asm.calls.len() <= MAX_TOOL_CALLS);
            prop_assert!(asm.calls.iter().all(|c| c.1.len() <= 4096 && c.2.len() <= 4096));
            if !failed {
                let _ = asm.finish(true);
            }
        }
    }
}
