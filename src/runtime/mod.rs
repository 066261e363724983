//! The agent loop. It knows neither HTTP nor any provider's wire format.
//!
//! [`run_turn`] appends the new input to the conversation, calls the provider
//! step by step (bounded by the agent's `max_steps` and `max_turn_seconds`),
//! and yields typed [`RunEvent`]s ending in exactly one `Done` or `Error`. The
//! JSON facades fold the events; SSE facades render them as they come.

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, timeout_at};

use crate::agent::AgentSpec;
use crate::domain::{AssistantPart, ConversationState, HistoryItem, StopReason, ToolCall, Usage};
use crate::llm::{ChatRequest, FinishReason, Provider, ProviderError, ProviderEvent};

/// What the caller adds to the conversation this turn.
#[derive(Debug, Clone, Default)]
pub struct TurnInput {
    pub messages: Vec<HistoryItem>,
    /// Appended to the agent's system prompt for this call only (Quant `system`).
    pub system_extra: Option<String>,
}

/// The end of a successful turn.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    pub state: ConversationState,
    pub stop_reason: StopReason,
    pub usage: Usage,
    /// The assistant's text for this turn (all steps).
    pub reply: String,
}

/// Errors that end a turn without a new state.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the turn exceeded its deadline of {0} s")]
    Deadline(u64),
}

/// One event of a running turn.
#[derive(Debug)]
pub enum RunEvent {
    TextDelta(String),
    ToolCall(ToolCall),
    Usage(Usage),
    Done(Box<TurnOutcome>),
    Error(RuntimeError),
}

/// Run one turn of `agent` on `state` with `input`.
pub fn run_turn(
    agent: Arc<AgentSpec>,
    provider: Arc<dyn Provider>,
    mut state: ConversationState,
    input: TurnInput,
) -> impl Stream<Item = RunEvent> + Send + 'static {
    async_stream::stream! {
        let deadline = Instant::now() + agent.max_turn;
        let system = match &input.system_extra {
            Some(extra) if !extra.is_empty() && !agent.system_prompt.is_empty() => {
                format!("{}\n\n{}", agent.system_prompt, extra)
            }
            Some(extra) if !extra.is_empty() => extra.clone(),
            _ => agent.system_prompt.clone(),
        };
        state.history.extend(input.messages);
        state.turn += 1;
        state.cfg.clone_from(&agent.cfg_hash);
        let mut usage = Usage::default();
        let mut reply = String::new();
        // One step: with no tools offered, the model's answer ends the turn.
        // (`max_steps` bounds the loop once tool calls are run.)
        {
            let request = ChatRequest {
                model: &agent.model,
                system: (!system.is_empty()).then_some(system.as_str()),
                messages: &state.history,
                temperature: agent.temperature,
                max_tokens: agent.max_tokens,
            };
            let mut events = match timeout_at(deadline, provider.stream(request)).await {
                Err(_) => {
                    yield RunEvent::Error(RuntimeError::Deadline(agent.max_turn.as_secs()));
                    return;
                }
                Ok(Err(e)) => {
                    yield RunEvent::Error(e.into());
                    return;
                }
                Ok(Ok(events)) => events,
            };
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            let mut finish = FinishReason::Stop;
            loop {
                match timeout_at(deadline, events.next()).await {
                    Err(_) => {
                        yield RunEvent::Error(RuntimeError::Deadline(agent.max_turn.as_secs()));
                        return;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        yield RunEvent::Error(e.into());
                        return;
                    }
                    Ok(Some(Ok(event))) => match event {
                        ProviderEvent::TextDelta(delta) => {
                            text.push_str(&delta);
                            yield RunEvent::TextDelta(delta);
                        }
                        ProviderEvent::ToolCall(call) => tool_calls.push(call),
                        ProviderEvent::Usage(u) => usage.add(u),
                        ProviderEvent::Finish(f) => finish = f,
                    },
                }
            }
            reply.push_str(&text);
            if !tool_calls.is_empty() {
                // No tools are offered to the model yet, so a tool call cannot be
                // answered; it is dropped rather than stored without a result.
                tracing::warn!(count = tool_calls.len(), "model called tools although none are offered; ignoring");
            }
            state.history.push(HistoryItem::Assistant {
                parts: if text.is_empty() { Vec::new() } else { vec![AssistantPart::Text { text }] },
                tool_calls: Vec::new(),
            });
            let stop_reason = match finish {
                FinishReason::Length => StopReason::MaxTokens,
                FinishReason::ContentFilter => StopReason::ContentFilter,
                FinishReason::Stop | FinishReason::ToolCalls => StopReason::EndTurn,
            };
            yield RunEvent::Usage(usage);
            yield RunEvent::Done(Box::new(TurnOutcome { state, stop_reason, usage, reply }));
        }
    }
}

/// Drive a turn to its end, ignoring intermediate events.
pub async fn run_to_end(events: impl Stream<Item = RunEvent>) -> Result<TurnOutcome, RuntimeError> {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            RunEvent::Done(outcome) => return Ok(*outcome),
            RunEvent::Error(e) => return Err(e),
            _ => {}
        }
    }
    Err(RuntimeError::Provider(ProviderError::Upstream(
        "the turn ended without an outcome".into(),
    )))
}

#[cfg(test)]
mod tests;
