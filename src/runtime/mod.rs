//! The agent loop. It knows neither HTTP nor any provider's wire format.
//!
//! [`run_turn`] appends the new input to the conversation, calls the provider
//! step by step (bounded by the agent's `max_steps` and `max_turn_seconds`),
//! and yields typed [`RunEvent`]s ending in exactly one `Done` or `Error`. The
//! JSON facades fold the events; SSE facades render them as they come.

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, timeout_at};

mod turn;

use crate::agent::AgentSpec;
use crate::domain::{ConversationState, HistoryItem, PendingAction, StopReason, ToolCall, Usage};
use crate::llm::{ProviderError, Route};
use crate::tools::{ToolRegistry, ToolRun, ToolSpec};
use turn::Turn;

/// What the caller adds to the conversation this turn.
#[derive(Debug, Clone, Default)]
pub struct TurnInput {
    pub messages: Vec<HistoryItem>,
    /// Appended to the agent's system prompt for this call only (Quant `system`).
    pub system_extra: Option<String>,
    /// Tools the client runs itself (Cognite `actions`), offered beside the agent's.
    pub client_tools: Vec<ToolSpec>,
    /// Results answering the previous turn's pending calls (client tool results,
    /// refused confirmations); they go right after those calls.
    pub tool_results: Vec<HistoryItem>,
    /// Confirmed server tool calls to run before the model is called again.
    pub approved: Vec<ToolCall>,
    /// Whether the caller can answer `toolConfirmation` actions; if not, a tool
    /// that needs one fails with a tool error instead of running.
    pub can_confirm: bool,
    /// Stream from the provider (the caller renders events as they come);
    /// otherwise each step is one complete provider call.
    pub streaming: bool,
}

/// The end of a successful turn.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    pub state: ConversationState,
    pub stop_reason: StopReason,
    pub usage: Usage,
    /// The assistant's text for this turn (all steps).
    pub reply: String,
    /// Every server tool run of this turn, in order.
    pub tool_runs: Vec<ToolRun>,
}

/// Errors that end a turn without a new state.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// One event of a running turn.
#[derive(Debug)]
pub enum RunEvent {
    TextDelta(String),
    ToolCall(ToolCall),
    ToolResult {
        id: String,
        name: String,
        ok: bool,
    },
    /// A client tool call handed back to the client; the turn stops after it.
    Action(PendingAction),
    Usage(Usage),
    Done(Box<TurnOutcome>),
    Error(RuntimeError),
}

/// What a turn runs with besides the conversation.
#[derive(Debug, Clone)]
pub struct TurnContext {
    pub agent: Arc<AgentSpec>,
    /// The agent's providers: retries, fallback and circuit breaking.
    pub route: Arc<Route>,
    pub tools: Arc<ToolRegistry>,
    /// Charges the turn's model tokens to its caller's rate limits.
    pub meter: Option<crate::limits::Meter>,
}

/// Run one turn of `agent` on `state` with `input`: call the model, run the
/// server tools it asks for (several calls of one step in parallel), and call
/// it again until it answers, `max_steps` model calls were made, or the
/// turn's deadline passes. Limit stops end the turn normally, with the
/// partial answer and a consistent history. The steps are [`Turn`]'s; this
/// only drives them and forwards their events as they come.
///
/// The stream is boxed: a turn's state machine is several KiB, and the
/// handlers pass it along (to the SSE renderer, the limits, the drain guard)
/// by value, so each of those moves would copy it.
pub fn run_turn(
    cx: TurnContext,
    state: ConversationState,
    input: TurnInput,
) -> futures_util::stream::BoxStream<'static, RunEvent> {
    Box::pin(async_stream::stream! {
        let (mut turn, opening) = Turn::start(cx, state, input).await;
        if !opening.approved.is_empty() {
            for call in &opening.approved {
                yield RunEvent::ToolCall(call.clone());
            }
            let approved: Vec<(usize, ToolCall)> = opening.approved.into_iter().enumerate().collect();
            for event in turn.run_server_calls(&approved).await {
                yield event;
            }
        }
        turn.state.history.extend(opening.messages);
        let mut stop = StopReason::MaxSteps;
        'steps: for _step in 0..turn.agent.max_steps {
            let mut answer = turn.new_answer();
            let cut_short = {
                let offered = turn.offered();
                let mut events = turn.route.call(turn.request(&offered), turn.streaming);
                loop {
                    match timeout_at(turn.deadline, events.next()).await {
                        // The unfinished step is dropped: the history stays consistent.
                        Err(_) => break true,
                        Ok(None) => break false,
                        // The provider gave up at the turn's deadline: a limit stop, not a failure.
                        Ok(Some(Err(_))) if Instant::now() >= turn.deadline => break true,
                        Ok(Some(Err(e))) => {
                            yield RunEvent::Error(e.into());
                            return;
                        }
                        Ok(Some(Ok(event))) => {
                            if let Some(forward) = answer.take(event) {
                                yield forward;
                            }
                        }
                    }
                }
            };
            if cut_short {
                // What the cut step was billed still counts.
                turn.count_usage(&answer);
                stop = StopReason::Deadline;
                break 'steps;
            }
            let calls = match turn.record_answer(answer) {
                Ok(calls) => calls,
                Err(reason) => {
                    stop = reason;
                    break 'steps;
                }
            };
            for call in &calls {
                yield RunEvent::ToolCall(call.clone());
            }
            let sorted = turn.sort_calls(&calls);
            for event in sorted.refused {
                yield event;
            }
            for event in turn.run_server_calls(&sorted.server).await {
                yield event;
            }
            if !sorted.pending.is_empty() {
                for event in turn.hand_over(sorted.pending) {
                    yield event;
                }
                stop = StopReason::ClientAction;
                break 'steps;
            }
            if Instant::now() >= turn.deadline {
                stop = StopReason::Deadline;
                break 'steps;
            }
        }
        let outcome = turn.finish(stop);
        yield RunEvent::Usage(outcome.usage);
        yield RunEvent::Done(Box::new(outcome));
    })
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
