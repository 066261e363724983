use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;

use super::*;
use crate::config::AgentSettings;
use crate::llm::scripted::ScriptedProvider;
use crate::llm::{Completion, EventStream};

fn agent(system: &str, max_turn_seconds: u64) -> Arc<AgentSpec> {
    let settings: AgentSettings = serde_json::from_value(serde_json::json!({
        "id": "a1", "provider": "p", "model": "m", "system_prompt": system,
        "max_turn_seconds": max_turn_seconds
    }))
    .unwrap();
    Arc::new(AgentSpec::from_settings(&settings))
}

/// Records the system prompt and message count of every request.
#[derive(Debug, Default)]
struct Recording(Mutex<Vec<(Option<String>, usize)>>);

#[async_trait::async_trait]
impl Provider for Recording {
    async fn complete(&self, req: ChatRequest<'_>) -> Result<Completion, ProviderError> {
        self.0
            .lock()
            .unwrap()
            .push((req.system.map(str::to_owned), req.messages.len()));
        Ok(Completion {
            text: "ok".into(),
            ..Default::default()
        })
    }
    async fn stream(&self, req: ChatRequest<'_>) -> Result<EventStream, ProviderError> {
        let c = self.complete(req).await?;
        Ok(futures_util::stream::iter(c.into_events().into_iter().map(Ok)).boxed())
    }
}

#[derive(Debug)]
struct Slow;

#[async_trait::async_trait]
impl Provider for Slow {
    async fn complete(&self, _req: ChatRequest<'_>) -> Result<Completion, ProviderError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Completion::default())
    }
    async fn stream(&self, req: ChatRequest<'_>) -> Result<EventStream, ProviderError> {
        self.complete(req).await?;
        Ok(futures_util::stream::empty().boxed())
    }
}

#[tokio::test]
async fn a_turn_streams_deltas_then_usage_then_done_with_the_new_state() {
    let state = ConversationState::new(0, "old");
    let input = TurnInput {
        messages: vec![HistoryItem::user_text("hello there")],
        system_extra: None,
    };
    let events: Vec<RunEvent> = run_turn(
        agent("be nice", 60),
        Arc::new(ScriptedProvider),
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
    };
    let outcome = run_to_end(run_turn(agent("base", 60), rec.clone(), state, input))
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
async fn a_turn_past_its_deadline_ends_in_an_error() {
    let input = TurnInput {
        messages: vec![HistoryItem::user_text("x")],
        system_extra: None,
    };
    let r = run_to_end(run_turn(
        agent("", 2),
        Arc::new(Slow),
        ConversationState::new(0, "c"),
        input,
    ))
    .await;
    assert!(matches!(r, Err(RuntimeError::Deadline(2))), "{r:?}");
}
