//! `scripted`: a deterministic offline model. It answers with what it was told
//! and how much conversation it saw, and streams its answer word by word, so
//! the default config runs with no network and runtime tests need no HTTP.
//! It is only used when an agent's provider is configured with `kind = "scripted"`.

use futures_util::StreamExt;

use super::{
    ChatRequest, Completion, EncodedBody, EventStream, FinishReason, Provider, ProviderError,
    ProviderEvent,
};
use crate::domain::{AssistantPart, HistoryItem, Usage, UserPart};

#[derive(Debug, Default, Clone, Copy)]
pub struct ScriptedProvider;

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The scripted answer to a request.
pub fn answer(req: &ChatRequest<'_>) -> Completion {
    let mut last_text = String::new();
    let mut images = 0;
    if let Some(HistoryItem::User { parts }) = req.messages.iter().rev().find(|m| m.starts_turn()) {
        for part in parts {
            match part {
                UserPart::Text { text } => {
                    if !last_text.is_empty() {
                        last_text.push(' ');
                    }
                    last_text.push_str(text);
                }
                UserPart::Image { .. } => images += 1,
            }
        }
    }
    let mut text = format!("You said: {last_text}");
    if images > 0 {
        text.push_str(&format!(" (with {images} image(s))"));
    }
    text.push_str(&format!(" [{} messages seen]", req.messages.len()));

    let mut input = req.system.map(words).unwrap_or(0);
    for m in req.messages {
        input += match m {
            HistoryItem::User { parts } => parts
                .iter()
                .map(|p| match p {
                    UserPart::Text { text } => words(text),
                    UserPart::Image { .. } => 1,
                })
                .sum(),
            HistoryItem::Assistant { parts, .. } => parts
                .iter()
                .map(|AssistantPart::Text { text }| words(text))
                .sum(),
            HistoryItem::ToolResult { content, .. } => words(content),
            HistoryItem::Reasoning { .. } => 0,
        };
    }
    let output = words(&text);
    Completion {
        text,
        reasoning: Vec::new(),
        tool_calls: Vec::new(),
        usage: Usage {
            input_tokens: Some(input),
            output_tokens: Some(output),
            ..Default::default()
        },
        finish: Some(FinishReason::Stop),
    }
}

#[async_trait::async_trait]
impl Provider for ScriptedProvider {
    async fn complete(
        &self,
        req: ChatRequest<'_>,
        _body: &EncodedBody,
    ) -> Result<Completion, ProviderError> {
        Ok(answer(&req))
    }

    async fn stream(
        &self,
        req: ChatRequest<'_>,
        _body: &EncodedBody,
    ) -> Result<EventStream, ProviderError> {
        let completion = answer(&req);
        let mut events: Vec<ProviderEvent> = completion
            .text
            .split_inclusive(' ')
            .map(|w| ProviderEvent::TextDelta(w.to_owned()))
            .collect();
        events.push(ProviderEvent::Usage(completion.usage));
        events.push(ProviderEvent::Finish(FinishReason::Stop));
        Ok(futures_util::stream::iter(events.into_iter().map(Ok)).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streaming_and_complete_give_the_same_answer() {
        let history = vec![
            HistoryItem::user_text("hello"),
            HistoryItem::assistant_text("hi"),
            HistoryItem::user_text("what now"),
        ];
        let req = ChatRequest {
            model: "m",
            system: Some("be brief"),
            messages: &history,
            temperature: None,
            max_tokens: None,
            tools: &[],
            thinking_budget: None,
            tool_choice: None,
            params: None,
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(5),
        };
        let p = ScriptedProvider;
        let full = p.complete(req, &EncodedBody::default()).await.unwrap();
        assert_eq!(full.text, "You said: what now [3 messages seen]");
        let events: Vec<_> = p
            .stream(req, &EncodedBody::default())
            .await
            .unwrap()
            .collect()
            .await;
        let streamed: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(ProviderEvent::TextDelta(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(streamed, full.text);
        assert!(events.len() > 3, "streams word by word");
        assert_eq!(full.usage.input_tokens, Some(2 + 1 + 1 + 2));
    }
}
