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
use crate::domain::{
    AssistantPart, ConversationState, HistoryItem, PendingAction, PendingKind, StopReason,
    ToolCall, Usage,
};
use crate::llm::{ChatRequest, FinishReason, ProviderError, ProviderEvent, Route};
use crate::tools::{ToolContext, ToolRegistry, ToolRun, ToolSpec, idempotency_key};

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
}

/// Run one turn of `agent` on `state` with `input`: call the model, run the
/// server tools it asks for (several calls of one step in parallel), and call
/// it again until it answers, `max_steps` model calls were made, or the
/// turn's deadline passes. Limit stops end the turn normally, with the
/// partial answer and a consistent history.
pub fn run_turn(
    cx: TurnContext,
    mut state: ConversationState,
    input: TurnInput,
) -> impl Stream<Item = RunEvent> + Send + 'static {
    async_stream::stream! {
        let TurnContext { agent, route, tools } = cx;
        let deadline = Instant::now() + agent.max_turn;
        let system = match &input.system_extra {
            Some(extra) if !extra.is_empty() && !agent.system_prompt.is_empty() => {
                format!("{}\n\n{}", agent.system_prompt, extra)
            }
            Some(extra) if !extra.is_empty() => extra.clone(),
            _ => agent.system_prompt.clone(),
        };
        tools.prepare(&agent.tools).await;
        let offered_tools = tools.offered(&agent.tools);
        let mut offered: Vec<&ToolSpec> = offered_tools.iter().map(|t| t.spec()).collect();
        offered.extend(input.client_tools.iter());
        let client_validators: Vec<(&str, Option<jsonschema::Validator>)> = input
            .client_tools
            .iter()
            .map(|t| (t.name.as_str(), jsonschema::validator_for(&t.parameters).ok()))
            .collect();
        state.turn += 1;
        state.cfg.clone_from(&agent.cfg_hash);
        let mut usage = Usage::default();
        let mut reply = String::new();
        let mut tool_runs = Vec::new();
        state.history.extend(input.tool_results);
        if !input.approved.is_empty() {
            for call in &input.approved {
                yield RunEvent::ToolCall(call.clone());
            }
            let runs = run_calls(&tools, &agent, &state, input.approved.iter().enumerate(), deadline).await;
            for run in runs {
                yield RunEvent::ToolResult { id: run.call.id.clone(), name: run.call.name.clone(), ok: !run.is_error };
                state.history.push(result_item(&run));
                tool_runs.push(run);
            }
        }
        state.history.extend(input.messages);
        let mut stop_reason = StopReason::MaxSteps;

        'steps: for _step in 0..agent.max_steps {
            let request = ChatRequest {
                model: &agent.model,
                system: (!system.is_empty()).then_some(system.as_str()),
                messages: &state.history,
                temperature: agent.temperature,
                max_tokens: agent.max_tokens,
                tools: &offered,
                thinking_budget: agent.thinking_budget,
                deadline,
            };
            let mut events = route.call(request, input.streaming);
            let mut text = String::new();
            let mut reasoning = Vec::new();
            let mut calls = Vec::new();
            let mut finish = FinishReason::Stop;
            loop {
                match timeout_at(deadline, events.next()).await {
                    Err(_) => {
                        // The unfinished step is dropped: the history stays consistent.
                        stop_reason = StopReason::Deadline;
                        break 'steps;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(_))) if Instant::now() >= deadline => {
                        // The provider gave up at the turn's deadline: a limit stop, not a failure.
                        stop_reason = StopReason::Deadline;
                        break 'steps;
                    }
                    Ok(Some(Err(e))) => {
                        yield RunEvent::Error(e.into());
                        return;
                    }
                    Ok(Some(Ok(event))) => match event {
                        ProviderEvent::TextDelta(delta) => {
                            text.push_str(&delta);
                            yield RunEvent::TextDelta(delta);
                        }
                        ProviderEvent::Reasoning(r) => reasoning.push(HistoryItem::Reasoning {
                            provider: r.provider.to_owned(),
                            blob: r.blob,
                        }),
                        ProviderEvent::ToolCall(call) => calls.push(call),
                        ProviderEvent::Usage(u) => usage.add(u),
                        ProviderEvent::Finish(f) => finish = f,
                    },
                }
            }
            drop(events);
            reply.push_str(&text);
            state.history.extend(reasoning);
            state.history.push(HistoryItem::Assistant {
                parts: if text.is_empty() { Vec::new() } else { vec![AssistantPart::Text { text }] },
                tool_calls: calls.clone(),
            });
            if calls.is_empty() {
                stop_reason = match finish {
                    FinishReason::Length => StopReason::MaxTokens,
                    FinishReason::ContentFilter => StopReason::ContentFilter,
                    FinishReason::Stop | FinishReason::ToolCalls => StopReason::EndTurn,
                };
                break 'steps;
            }
            for call in &calls {
                yield RunEvent::ToolCall(call.clone());
            }
            // Client tool calls go back to the client (or, with bad arguments, to the model).
            let mut pending = Vec::new();
            let mut server_calls = Vec::new();
            for (position, call) in calls.iter().enumerate() {
                let needs_confirmation = tools
                    .find(&agent.tools, &call.name)
                    .is_some_and(|t| t.spec().confirm);
                match client_validators.iter().find(|(name, _)| *name == call.name) {
                    None if needs_confirmation && input.can_confirm => pending.push(PendingAction {
                        action_id: uuid::Uuid::new_v4().to_string(),
                        kind: PendingKind::ToolConfirmation,
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    }),
                    None if needs_confirmation => {
                        yield RunEvent::ToolResult { id: call.id.clone(), name: call.name.clone(), ok: false };
                        state.history.push(HistoryItem::ToolResult {
                            call_id: call.id.clone(),
                            name: call.name.clone(),
                            content: "this tool needs the user's confirmation, which cannot be asked for here".into(),
                            is_error: true,
                        });
                    }
                    None => server_calls.push((position, call)),
                    Some((_, validator)) => {
                        let problem = match serde_json::from_str::<serde_json::Value>(if call.arguments.trim().is_empty() { "{}" } else { &call.arguments }) {
                            Err(e) => Some(format!("the arguments are not valid JSON: {e}")),
                            Ok(args) => validator
                                .as_ref()
                                .and_then(|v| v.iter_errors(&args).next().map(|e| format!("the arguments do not match the tool's schema: {e}"))),
                        };
                        match problem {
                            Some(message) => {
                                yield RunEvent::ToolResult { id: call.id.clone(), name: call.name.clone(), ok: false };
                                state.history.push(HistoryItem::ToolResult {
                                    call_id: call.id.clone(),
                                    name: call.name.clone(),
                                    content: message,
                                    is_error: true,
                                });
                            }
                            None => pending.push(PendingAction {
                                action_id: uuid::Uuid::new_v4().to_string(),
                                kind: PendingKind::ClientTool,
                                call_id: call.id.clone(),
                                name: call.name.clone(),
                                arguments: call.arguments.clone(),
                            }),
                        }
                    }
                }
            }
            let runs = run_calls(&tools, &agent, &state, server_calls.into_iter(), deadline).await;
            for run in runs {
                yield RunEvent::ToolResult { id: run.call.id.clone(), name: run.call.name.clone(), ok: !run.is_error };
                state.history.push(result_item(&run));
                tool_runs.push(run);
            }
            if !pending.is_empty() {
                for action in &pending {
                    yield RunEvent::Action(action.clone());
                }
                state.pending = pending;
                stop_reason = StopReason::ClientAction;
                break 'steps;
            }
            if Instant::now() >= deadline {
                stop_reason = StopReason::Deadline;
                break 'steps;
            }
        }
        yield RunEvent::Usage(usage);
        yield RunEvent::Done(Box::new(TurnOutcome { state, stop_reason, usage, reply, tool_runs }));
    }
}

/// Run server tool calls (with their positions in the step) in parallel, each
/// with its idempotency key.
async fn run_calls<'a>(
    tools: &ToolRegistry,
    agent: &AgentSpec,
    state: &ConversationState,
    calls: impl Iterator<Item = (usize, &'a ToolCall)>,
    deadline: Instant,
) -> Vec<ToolRun> {
    futures_util::future::join_all(calls.map(|(position, call)| {
        let args: serde_json::Value =
            serde_json::from_str(&call.arguments).unwrap_or(serde_json::Value::Null);
        let ctx = ToolContext {
            idempotency_key: idempotency_key(&state.id, state.turn, &call.name, &args, position),
        };
        tools.run(&agent.tools, call, ctx, deadline)
    }))
    .await
}

/// The history item recording a tool run's result.
fn result_item(run: &ToolRun) -> HistoryItem {
    HistoryItem::ToolResult {
        call_id: run.call.id.clone(),
        name: run.call.name.clone(),
        content: run.content.clone(),
        is_error: run.is_error,
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
