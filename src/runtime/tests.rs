use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;

use super::*;
use crate::config::AgentSettings;
use crate::llm::scripted::ScriptedProvider;
use crate::llm::{ChatRequest, Completion, EncodedBody, EventStream, Provider};

fn agent(system: &str, max_turn_seconds: u64) -> Arc<AgentSpec> {
    agent_with(serde_json::json!({
        "id": "a1", "provider": "p", "model": "m", "system_prompt": system,
        "max_turn_seconds": max_turn_seconds
    }))
}

fn agent_with(settings: serde_json::Value) -> Arc<AgentSpec> {
    let settings: AgentSettings = serde_json::from_value(settings).unwrap();
    Arc::new(AgentSpec::from_settings(&settings))
}

fn cx(agent: Arc<AgentSpec>, provider: Arc<dyn Provider>) -> TurnContext {
    TurnContext {
        agent,
        route: Arc::new(Route::single(provider)),
        tools: Arc::new(ToolRegistry::new(&[], &|_| None).unwrap()),
        meter: None,
    }
}

/// Records the system prompt and message count of every request.
#[derive(Debug, Default)]
struct Recording(Mutex<Vec<(Option<String>, usize)>>);

#[async_trait::async_trait]
impl Provider for Recording {
    async fn complete(
        &self,
        req: ChatRequest<'_>,
        _body: &EncodedBody,
    ) -> Result<Completion, ProviderError> {
        self.0
            .lock()
            .unwrap()
            .push((req.system.map(str::to_owned), req.messages.len()));
        Ok(Completion {
            text: "ok".into(),
            ..Default::default()
        })
    }
    async fn stream(
        &self,
        req: ChatRequest<'_>,
        body: &EncodedBody,
    ) -> Result<EventStream, ProviderError> {
        let c = self.complete(req, body).await?;
        Ok(futures_util::stream::iter(c.into_events().into_iter().map(Ok)).boxed())
    }
}

#[derive(Debug)]
struct Slow;

#[async_trait::async_trait]
impl Provider for Slow {
    async fn complete(
        &self,
        _req: ChatRequest<'_>,
        _body: &EncodedBody,
    ) -> Result<Completion, ProviderError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Completion::default())
    }
    async fn stream(
        &self,
        req: ChatRequest<'_>,
        body: &EncodedBody,
    ) -> Result<EventStream, ProviderError> {
        self.complete(req, body).await?;
        Ok(futures_util::stream::empty().boxed())
    }
}

#[tokio::test]
async fn a_turn_streams_deltas_then_usage_then_done_with_the_new_state() {
    let state = ConversationState::new(0, "old");
    let input = TurnInput {
        messages: vec![HistoryItem::user_text("hello there")],
        system_extra: None,
        client_tools: Vec::new(),
        tool_results: Vec::new(),
        approved: Vec::new(),
        can_confirm: false,
        streaming: false,
    };
    let events: Vec<RunEvent> = run_turn(
        cx(agent("be nice", 60), Arc::new(ScriptedProvider)),
        state,
        input,
    )
    .collect()
    .await;
    let deltas: String = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, "You said: hello there [1 messages seen]");
    assert!(matches!(events[events.len() - 2], RunEvent::Usage(_)));
    let RunEvent::Done(outcome) = events.last().unwrap() else {
        panic!("last event is Done")
    };
    assert_eq!(outcome.reply, deltas);
    assert_eq!(outcome.state.turn, 1);
    assert_eq!(outcome.state.cfg, agent("be nice", 60).cfg_hash);
    assert_eq!(outcome.state.history.len(), 2);
    assert_eq!(
        outcome.state.history[1],
        HistoryItem::assistant_text(deltas)
    );
    assert_eq!(outcome.stop_reason, StopReason::EndTurn);
    assert_eq!(outcome.usage.output_tokens, Some(7));
}

#[tokio::test]
async fn the_system_prompt_and_extra_go_to_the_provider_never_into_the_state() {
    let rec = Arc::new(Recording::default());
    let mut state = ConversationState::new(0, "c");
    state.history = vec![
        HistoryItem::user_text("a"),
        HistoryItem::assistant_text("b"),
    ];
    let input = TurnInput {
        messages: vec![HistoryItem::user_text("c")],
        system_extra: Some("extra".into()),
        client_tools: Vec::new(),
        tool_results: Vec::new(),
        approved: Vec::new(),
        can_confirm: false,
        streaming: false,
    };
    let outcome = run_to_end(run_turn(cx(agent("base", 60), rec.clone()), state, input))
        .await
        .unwrap();
    assert_eq!(
        rec.0.lock().unwrap().as_slice(),
        &[(Some("base\n\nextra".to_owned()), 3)]
    );
    let sealed_json = serde_json::to_string(&outcome.state.history).unwrap();
    assert!(!sealed_json.contains("base") && !sealed_json.contains("extra"));
}

#[tokio::test(start_paused = true)]
async fn a_turn_past_its_deadline_stops_with_a_consistent_history() {
    let input = TurnInput {
        messages: vec![HistoryItem::user_text("x")],
        system_extra: None,
        client_tools: Vec::new(),
        tool_results: Vec::new(),
        approved: Vec::new(),
        can_confirm: false,
        streaming: false,
    };
    let outcome = run_to_end(run_turn(
        cx(agent("", 2), Arc::new(Slow)),
        ConversationState::new(0, "c"),
        input,
    ))
    .await
    .unwrap();
    assert_eq!(outcome.stop_reason, StopReason::Deadline);
    assert_eq!(outcome.reply, "");
    assert_eq!(
        outcome.state.history,
        vec![HistoryItem::user_text("x")],
        "the unfinished step is dropped"
    );
}

/// A model that calls the tools in `script` (one entry per step), then answers
/// with the tool results it saw.
#[derive(Debug)]
struct ToolModel {
    script: Vec<Vec<(&'static str, &'static str)>>,
    endless: bool,
}

#[async_trait::async_trait]
impl Provider for ToolModel {
    async fn complete(
        &self,
        req: ChatRequest<'_>,
        _body: &EncodedBody,
    ) -> Result<Completion, ProviderError> {
        let step = req
            .messages
            .iter()
            .filter(|m| matches!(m, HistoryItem::Assistant { .. }))
            .count();
        if let Some(calls) = self.script.get(step).or(if self.endless {
            self.script.first()
        } else {
            None
        }) {
            return Ok(Completion {
                tool_calls: calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, args))| ToolCall {
                        id: format!("s{step}c{i}"),
                        name: (*name).into(),
                        arguments: (*args).into(),
                    })
                    .collect(),
                usage: Usage {
                    input_tokens: Some(10),
                    output_tokens: Some(1),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let seen: Vec<String> = req
            .messages
            .iter()
            .filter_map(|m| match m {
                HistoryItem::ToolResult {
                    content, is_error, ..
                } => Some(format!("{}{content}", if *is_error { "!" } else { "" })),
                _ => None,
            })
            .collect();
        Ok(Completion {
            text: seen.join(" | "),
            usage: Usage {
                input_tokens: Some(10),
                output_tokens: Some(5),
                ..Default::default()
            },
            ..Default::default()
        })
    }
    async fn stream(
        &self,
        req: ChatRequest<'_>,
        body: &EncodedBody,
    ) -> Result<EventStream, ProviderError> {
        let c = self.complete(req, body).await?;
        Ok(futures_util::stream::iter(c.into_events().into_iter().map(Ok)).boxed())
    }
}

fn tool_agent(max_steps: u32) -> Arc<AgentSpec> {
    agent_with(serde_json::json!({
        "id": "t", "provider": "p", "model": "m", "tools": ["calculator", "clock"], "max_steps": max_steps
    }))
}

fn ask(text: &str) -> TurnInput {
    TurnInput {
        messages: vec![HistoryItem::user_text(text)],
        system_extra: None,
        client_tools: Vec::new(),
        tool_results: Vec::new(),
        approved: Vec::new(),
        can_confirm: false,
        streaming: false,
    }
}

#[tokio::test]
async fn tool_call_results_go_back_to_the_model_in_order() {
    let model = ToolModel {
        script: vec![vec![
            ("calculator", r#"{"expression":"6*7"}"#),
            ("calculator", r#"{"expression":"1+1"}"#),
        ]],
        endless: false,
    };
    let events: Vec<RunEvent> = run_turn(
        cx(tool_agent(8), Arc::new(model)),
        ConversationState::new(0, "c"),
        ask("sums"),
    )
    .collect()
    .await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            RunEvent::TextDelta(_) => "delta",
            RunEvent::ToolCall(_) => "call",
            RunEvent::ToolResult { ok: true, .. } => "ok",
            RunEvent::ToolResult { ok: false, .. } => "err",
            RunEvent::Usage(_) => "usage",
            RunEvent::Done(_) => "done",
            RunEvent::Error(_) => "error",
            RunEvent::Action(_) => "action",
        })
        .collect();
    assert_eq!(
        kinds,
        ["call", "call", "ok", "ok", "delta", "usage", "done"]
    );
    let RunEvent::Done(outcome) = events.last().unwrap() else {
        panic!()
    };
    assert_eq!(outcome.reply, "42 | 2");
    assert_eq!(outcome.stop_reason, StopReason::EndTurn);
    assert_eq!(
        outcome.usage,
        Usage {
            input_tokens: Some(20),
            output_tokens: Some(6),
            ..Default::default()
        },
        "summed over steps"
    );
    assert_eq!(outcome.tool_runs.len(), 2);
    // user, assistant(calls), 2 results, assistant(answer)
    assert_eq!(outcome.state.history.len(), 5);
}

/// A tool whose calls all wait for each other: it answers only once
/// `parties` calls are in flight at the same time.
#[derive(Debug)]
struct Rendezvous {
    spec: crate::tools::ToolSpec,
    barrier: tokio::sync::Barrier,
}

#[async_trait::async_trait]
impl crate::tools::Tool for Rendezvous {
    fn spec(&self) -> &crate::tools::ToolSpec {
        &self.spec
    }
    async fn call(
        &self,
        _args: serde_json::Value,
        _ctx: &crate::tools::ToolContext,
    ) -> Result<String, crate::tools::ToolError> {
        self.barrier.wait().await;
        Ok("met".into())
    }
}

#[tokio::test(start_paused = true)]
async fn the_calls_of_one_step_run_concurrently() {
    // Run one after the other, the first call would wait out its timeout
    // (paused time makes that instant) and fail.
    let meet = Rendezvous {
        spec: crate::tools::ToolSpec {
            name: "meet".into(),
            description: "waits for the other calls".into(),
            parameters: serde_json::json!({"type": "object"}),
            origin: crate::tools::ToolOrigin::Builtin,
            timeout: Duration::from_secs(30),
            expose: crate::tools::Expose::Full,
            confirm: false,
        },
        barrier: tokio::sync::Barrier::new(3),
    };
    let model = ToolModel {
        script: vec![vec![("meet", "{}"), ("meet", "{}"), ("meet", "{}")]],
        endless: false,
    };
    let mut context = cx(
        agent_with(serde_json::json!({
            "id": "t", "provider": "p", "model": "m", "tools": ["meet"], "max_steps": 4
        })),
        Arc::new(model),
    );
    context.tools = Arc::new(
        ToolRegistry::new(&[], &|_| None)
            .unwrap()
            .with_tool(Arc::new(meet)),
    );
    let events: Vec<RunEvent> = run_turn(context, ConversationState::new(0, "c"), ask("meet"))
        .collect()
        .await;
    let RunEvent::Done(outcome) = events.last().unwrap() else {
        panic!("{events:?}")
    };
    assert_eq!(outcome.reply, "met | met | met", "{events:?}");
    assert!(outcome.tool_runs.iter().all(|r| !r.is_error));
}

#[tokio::test]
async fn bad_arguments_and_unknown_tools_reach_the_model_as_tool_errors() {
    let model = ToolModel {
        script: vec![vec![
            ("calculator", "{broken"),
            ("calculator", r#"{"wrong":"field"}"#),
            ("rm_rf", "{}"),
        ]],
        endless: false,
    };
    let outcome = run_to_end(run_turn(
        cx(tool_agent(8), Arc::new(model)),
        ConversationState::new(0, "c"),
        ask("x"),
    ))
    .await
    .unwrap();
    let parts: Vec<&str> = outcome.reply.split(" | ").collect();
    assert_eq!(parts.len(), 3);
    assert!(
        parts[0].starts_with("!the arguments are not valid JSON"),
        "{}",
        parts[0]
    );
    assert!(
        parts[1].starts_with("!the arguments do not match"),
        "{}",
        parts[1]
    );
    assert!(
        parts[2].starts_with("!unknown tool \"rm_rf\""),
        "{}",
        parts[2]
    );
    assert_eq!(outcome.stop_reason, StopReason::EndTurn);
}

#[tokio::test]
async fn an_endless_tool_loop_is_stopped_by_the_step_limit() {
    let model = ToolModel {
        script: vec![vec![("clock", "{}")]],
        endless: true,
    };
    let outcome = run_to_end(run_turn(
        cx(tool_agent(3), Arc::new(model)),
        ConversationState::new(0, "c"),
        ask("loop"),
    ))
    .await
    .unwrap();
    assert_eq!(outcome.stop_reason, StopReason::MaxSteps);
    assert_eq!(outcome.tool_runs.len(), 3);
    // Every call has its result: the history can be sent upstream again.
    let calls = outcome
        .state
        .history
        .iter()
        .filter(
            |i| matches!(i, HistoryItem::Assistant { tool_calls, .. } if !tool_calls.is_empty()),
        )
        .count();
    let results = outcome
        .state
        .history
        .iter()
        .filter(|i| matches!(i, HistoryItem::ToolResult { .. }))
        .count();
    assert_eq!((calls, results), (3, 3));
}

/// Tokens are charged as reported; a model call dropped before it reported
/// any (an upstream failure, a client hanging up) is charged an estimate.
#[tokio::test]
async fn model_calls_are_charged_what_they_report_or_an_estimate_when_dropped_before() {
    use crate::limits::{Counters, Meter, TokenBucket};
    use crate::store::{Store, Tokens};
    let store: Arc<dyn Store> = Arc::new(crate::store::memory::MemoryStore::new(10));
    let meter = |key: &str| {
        let bucket = TokenBucket {
            key: key.to_owned(),
            per_minute: 100,
        };
        Meter::new(Counters::new(store.clone()), vec![bucket])
    };
    {
        let mut reported = turn::StepAnswer::new(meter("reported"), 400);
        reported.take(crate::llm::ProviderEvent::TextDelta("y".repeat(400)));
        reported.take(crate::llm::ProviderEvent::Usage(crate::domain::Usage {
            input_tokens: Some(30),
            output_tokens: Some(10),
            ..Default::default()
        }));
        let mut dropped = turn::StepAnswer::new(meter("dropped"), 400);
        // 400 prompt bytes and 400 streamed: 200 tokens, two minutes' worth.
        dropped.take(crate::llm::ProviderEvent::TextDelta("y".repeat(400)));
    }
    // The charges are written in the background.
    let mut remaining = (None, None);
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        let r = store
            .meter_tokens("reported", 100, Tokens::Peek)
            .await
            .unwrap();
        let d = store
            .meter_tokens("dropped", 100, Tokens::Peek)
            .await
            .unwrap();
        if r.remaining < 100 && !d.allowed {
            remaining = (Some(r.remaining), Some(d.remaining));
            break;
        }
    }
    assert_eq!(remaining, (Some(60), Some(0)));
}
