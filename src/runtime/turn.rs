//! One turn's state and its named steps. [`super::run_turn`] only drives
//! them and forwards their events; every decision is made here, in plain
//! functions that rustfmt and the compiler see whole.

use std::sync::Arc;

use tokio::time::Instant;

use super::{RunEvent, TurnContext, TurnInput, TurnOutcome};
use crate::agent::AgentSpec;
use crate::domain::{
    AssistantPart, ConversationState, HistoryItem, PendingAction, PendingKind, StopReason,
    ToolCall, Usage, UserPart,
};
use crate::llm::{ChatRequest, FinishReason, ProviderEvent, Route};
use crate::tools::{Tool, ToolContext, ToolRegistry, ToolRun, ToolSpec, idempotency_key};

/// A turn in progress.
pub(super) struct Turn {
    pub agent: Arc<AgentSpec>,
    pub route: Arc<Route>,
    tools: Arc<ToolRegistry>,
    pub deadline: Instant,
    system: String,
    offered_tools: Vec<Arc<dyn Tool>>,
    client_tools: Vec<ToolSpec>,
    client_validators: Vec<(String, Option<jsonschema::Validator>)>,
    can_confirm: bool,
    pub streaming: bool,
    pub state: ConversationState,
    usage: Usage,
    meter: Option<crate::limits::Meter>,
    reply: String,
    tool_runs: Vec<ToolRun>,
}

/// What the caller's input leaves for the driver once the turn has started.
pub(super) struct Opening {
    /// Confirmed server tool calls to run first.
    pub approved: Vec<ToolCall>,
    /// The new messages, added after the approved calls' results.
    pub messages: Vec<HistoryItem>,
}

/// One model call's answer, accumulated from its events.
#[derive(Default)]
pub(super) struct StepAnswer {
    text: String,
    reasoning: Vec<HistoryItem>,
    calls: Vec<ToolCall>,
    finish: Option<FinishReason>,
    usage: Usage,
    billing: Billing,
}

/// Charges a model call's tokens to the caller's rate limits as the
/// provider reports them. A call dropped before any usage was reported (it
/// failed mid-answer, or the client hung up on the stream) is charged an
/// estimate when this is dropped: its prompt and what it streamed, at four
/// bytes a token.
#[derive(Default)]
struct Billing {
    meter: Option<crate::limits::Meter>,
    reported: bool,
    prompt_bytes: usize,
    answer_bytes: usize,
}

impl Drop for Billing {
    fn drop(&mut self) {
        if let (Some(meter), false) = (&self.meter, self.reported) {
            meter.charge(((self.prompt_bytes + self.answer_bytes) / 4) as u64);
        }
    }
}

impl StepAnswer {
    /// An empty answer whose usage is charged to `meter`; `prompt_bytes`
    /// sizes the estimate charged if the provider never reports usage.
    pub fn new(meter: Option<crate::limits::Meter>, prompt_bytes: usize) -> Self {
        Self {
            billing: Billing {
                meter,
                prompt_bytes,
                ..Billing::default()
            },
            ..Self::default()
        }
    }

    /// Take one provider event in; returns the event to forward, if any.
    pub fn take(&mut self, event: ProviderEvent) -> Option<RunEvent> {
        match event {
            ProviderEvent::TextDelta(delta) => {
                self.billing.answer_bytes += delta.len();
                self.text.push_str(&delta);
                return Some(RunEvent::TextDelta(delta));
            }
            ProviderEvent::Reasoning(r) => self.reasoning.push(HistoryItem::Reasoning {
                provider: r.provider.to_owned(),
                blob: r.blob,
            }),
            ProviderEvent::ToolCall(call) => {
                self.billing.answer_bytes += call.arguments.len();
                self.calls.push(call);
            }
            ProviderEvent::Usage(u) => {
                self.usage.add(u);
                self.billing.reported = true;
                if let Some(meter) = &self.billing.meter {
                    meter.charge(u.billed());
                }
            }
            ProviderEvent::Finish(f) => self.finish = Some(f),
        }
        None
    }
}

/// How a step's calls are handled.
pub(super) struct SortedCalls {
    /// Calls refused without running (their results are already in the history).
    pub refused: Vec<RunEvent>,
    /// Client tool calls and confirmations handed back to the client.
    pub pending: Vec<PendingAction>,
    /// Server tool calls to run, with their positions in the step.
    pub server: Vec<(usize, ToolCall)>,
}

impl Turn {
    /// Start a turn: the effective system prompt, the offered tools, the
    /// client tools' validators, and the turn number.
    pub async fn start(
        cx: TurnContext,
        mut state: ConversationState,
        input: TurnInput,
    ) -> (Self, Opening) {
        let TurnContext {
            agent,
            route,
            tools,
            meter,
        } = cx;
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
        let client_validators = input
            .client_tools
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    jsonschema::validator_for(&t.parameters).ok(),
                )
            })
            .collect();
        state.turn += 1;
        state.cfg.clone_from(&agent.cfg_hash);
        state.history.extend(input.tool_results);
        let turn = Self {
            agent,
            route,
            tools,
            deadline,
            system,
            offered_tools,
            client_tools: input.client_tools,
            client_validators,
            can_confirm: input.can_confirm,
            streaming: input.streaming,
            state,
            usage: Usage::default(),
            meter,
            reply: String::new(),
            tool_runs: Vec::new(),
        };
        let opening = Opening {
            approved: input.approved,
            messages: input.messages,
        };
        (turn, opening)
    }

    /// The next model request: the whole history and every offered tool.
    pub fn request<'a>(&'a self, offered: &'a [&'a ToolSpec]) -> ChatRequest<'a> {
        ChatRequest {
            model: &self.agent.model,
            system: (!self.system.is_empty()).then_some(self.system.as_str()),
            messages: &self.state.history,
            temperature: self.agent.temperature,
            max_tokens: self.agent.max_tokens,
            tools: offered,
            thinking_budget: self.agent.thinking_budget,
            tool_choice: self.agent.tool_choice.as_ref().map(|c| {
                let after_tools = matches!(
                    self.state.history.last(),
                    Some(HistoryItem::ToolResult { .. })
                );
                c.for_call(after_tools, offered)
            }),
            params: self.agent.params.as_ref(),
            deadline: self.deadline,
        }
    }

    /// The tools the model is offered: the agent's, then the client's.
    pub fn offered(&self) -> Vec<&ToolSpec> {
        let mut offered: Vec<&ToolSpec> = self.offered_tools.iter().map(|t| t.spec()).collect();
        offered.extend(self.client_tools.iter());
        offered
    }

    /// Count the usage of a step that was cut short (its answer is dropped).
    pub fn count_usage(&mut self, answer: &StepAnswer) {
        self.add_usage(answer.usage);
    }

    fn add_usage(&mut self, usage: Usage) {
        self.usage.add(usage);
    }

    /// The next model call's answer, charged to the caller's token limits.
    pub fn new_answer(&self) -> StepAnswer {
        let prompt_bytes = if self.meter.is_some() {
            self.prompt_bytes()
        } else {
            0
        };
        StepAnswer::new(self.meter.clone(), prompt_bytes)
    }

    /// About how many bytes of text the next model call sends.
    fn prompt_bytes(&self) -> usize {
        let history: usize = self
            .state
            .history
            .iter()
            .map(|item| match item {
                HistoryItem::User { parts } => parts
                    .iter()
                    .map(|p| match p {
                        UserPart::Text { text } => text.len(),
                        // An image costs the model about a thousand tokens.
                        UserPart::Image { .. } => 4000,
                    })
                    .sum(),
                HistoryItem::Assistant { parts, tool_calls } => {
                    parts
                        .iter()
                        .map(|AssistantPart::Text { text }| text.len())
                        .sum::<usize>()
                        + tool_calls.iter().map(|c| c.arguments.len()).sum::<usize>()
                }
                HistoryItem::ToolResult { content, .. } => content.len(),
                HistoryItem::Reasoning { blob, .. } => blob.len(),
            })
            .sum();
        self.system.len() + history
    }

    /// Record a model answer in the history. Without tool calls the turn is
    /// over: returns why; otherwise the calls to handle.
    pub fn record_answer(&mut self, answer: StepAnswer) -> Result<Vec<ToolCall>, StopReason> {
        let StepAnswer {
            text,
            reasoning,
            calls,
            finish,
            usage,
            billing: _,
        } = answer;
        self.add_usage(usage);
        self.reply.push_str(&text);
        self.state.history.extend(reasoning);
        self.state.history.push(HistoryItem::Assistant {
            parts: if text.is_empty() {
                Vec::new()
            } else {
                vec![AssistantPart::Text { text }]
            },
            tool_calls: calls.clone(),
        });
        if !calls.is_empty() {
            return Ok(calls);
        }
        Err(match finish.unwrap_or(FinishReason::Stop) {
            FinishReason::Length => StopReason::MaxTokens,
            FinishReason::ContentFilter => StopReason::ContentFilter,
            FinishReason::Stop | FinishReason::ToolCalls => StopReason::EndTurn,
        })
    }

    /// Sort a step's calls: confirmations and valid client tool calls go to
    /// the client, server tools run, and what cannot be done (a confirmation
    /// the caller cannot ask for, client arguments that fail their schema)
    /// goes back to the model as a tool error at once.
    pub fn sort_calls(&mut self, calls: &[ToolCall]) -> SortedCalls {
        let mut sorted = SortedCalls {
            refused: Vec::new(),
            pending: Vec::new(),
            server: Vec::new(),
        };
        for (position, call) in calls.iter().enumerate() {
            let client = self
                .client_validators
                .iter()
                .find(|(name, _)| *name == call.name);
            let refusal = match client {
                None if self.needs_confirmation(call) => {
                    if self.can_confirm {
                        sorted
                            .pending
                            .push(pending(PendingKind::ToolConfirmation, call));
                        None
                    } else {
                        Some(
                            "this tool needs the user's confirmation, which cannot be asked for here"
                                .to_owned(),
                        )
                    }
                }
                None => {
                    sorted.server.push((position, call.clone()));
                    None
                }
                Some((_, validator)) => match client_argument_problem(call, validator.as_ref()) {
                    Some(problem) => Some(problem),
                    None => {
                        sorted.pending.push(pending(PendingKind::ClientTool, call));
                        None
                    }
                },
            };
            if let Some(content) = refusal {
                sorted.refused.push(RunEvent::ToolResult {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    ok: false,
                });
                self.state.history.push(HistoryItem::ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content,
                    is_error: true,
                });
            }
        }
        sorted
    }

    fn needs_confirmation(&self, call: &ToolCall) -> bool {
        self.tools
            .find(&self.agent.tools, &call.name)
            .is_some_and(|t| t.spec().confirm)
    }

    /// Run server tool calls (with their positions in the step) in parallel,
    /// each with its idempotency key; record their results in order.
    pub async fn run_server_calls(&mut self, calls: &[(usize, ToolCall)]) -> Vec<RunEvent> {
        let runs = futures_util::future::join_all(calls.iter().map(|(position, call)| {
            let args =
                crate::tools::parse_arguments(&call.arguments).unwrap_or(serde_json::Value::Null);
            let ctx = ToolContext {
                idempotency_key: idempotency_key(
                    &self.state.id,
                    self.state.turn,
                    &call.name,
                    &args,
                    *position,
                ),
            };
            self.tools.run(&self.agent.tools, call, ctx, self.deadline)
        }))
        .await;
        let mut events = Vec::with_capacity(runs.len());
        for run in runs {
            events.push(RunEvent::ToolResult {
                id: run.call.id.clone(),
                name: run.call.name.clone(),
                ok: !run.is_error,
            });
            self.state.history.push(HistoryItem::ToolResult {
                call_id: run.call.id.clone(),
                name: run.call.name.clone(),
                content: run.content.clone(),
                is_error: run.is_error,
            });
            self.tool_runs.push(run);
        }
        events
    }

    /// Hand `pending` actions to the client: the turn stops here.
    pub fn hand_over(&mut self, pending: Vec<PendingAction>) -> Vec<RunEvent> {
        let events = pending.iter().cloned().map(RunEvent::Action).collect();
        self.state.pending = pending;
        events
    }

    /// The turn's outcome.
    pub fn finish(self, stop_reason: StopReason) -> TurnOutcome {
        TurnOutcome {
            state: self.state,
            stop_reason,
            usage: self.usage,
            reply: self.reply,
            tool_runs: self.tool_runs,
        }
    }
}

fn pending(kind: PendingKind, call: &ToolCall) -> PendingAction {
    PendingAction {
        action_id: uuid::Uuid::new_v4().to_string(),
        kind,
        call_id: call.id.clone(),
        name: call.name.clone(),
        arguments: call.arguments.clone(),
    }
}

/// Why a client tool call's arguments cannot go to the client, if they cannot.
fn client_argument_problem(
    call: &ToolCall,
    validator: Option<&jsonschema::Validator>,
) -> Option<String> {
    match crate::tools::parse_arguments(&call.arguments) {
        Err(problem) => Some(problem),
        Ok(args) => validator.and_then(|v| {
            v.iter_errors(&args)
                .next()
                .map(|e| format!("the arguments do not match the tool's schema: {e}"))
        }),
    }
}
