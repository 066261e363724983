//! LLM providers behind one trait. Each provider owns its wire types; the
//! runtime sees only [`ChatRequest`] and [`ProviderEvent`].

pub mod openai;
pub mod scripted;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::BoxStream;

use crate::config::{ProviderKind, ProviderSettings};
use crate::domain::{HistoryItem, ToolCall, Usage};

/// What the runtime asks of a provider for one step. Borrows the history.
#[derive(Debug, Clone, Copy)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    /// The agent's system prompt (plus any per-call addition), sent first.
    pub system: Option<&'a str>,
    pub messages: &'a [HistoryItem],
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Tools offered to the model.
    pub tools: &'a [&'a crate::tools::ToolSpec],
}

/// Why the model stopped, as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// One event of a provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    TextDelta(String),
    /// A complete tool call (providers assemble streamed fragments themselves).
    ToolCall(ToolCall),
    Usage(Usage),
    Finish(FinishReason),
}

/// A provider's complete, non-streamed answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub finish: Option<FinishReason>,
}

impl Completion {
    /// The events a stream of this completion would have produced.
    pub fn into_events(self) -> Vec<ProviderEvent> {
        let mut events = Vec::with_capacity(3 + self.tool_calls.len());
        if !self.text.is_empty() {
            events.push(ProviderEvent::TextDelta(self.text));
        }
        events.extend(self.tool_calls.into_iter().map(ProviderEvent::ToolCall));
        events.push(ProviderEvent::Usage(self.usage));
        events.push(ProviderEvent::Finish(
            self.finish.unwrap_or(FinishReason::Stop),
        ));
        events
    }
}

/// Errors of the provider layer. Messages are for logs; clients only see the class.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("upstream rejected the request with status {status}")]
    Rejected { status: u16 },
    #[error("upstream refused our credentials or endpoint with status {status}")]
    Misconfigured { status: u16 },
    #[error("upstream rate limited the request")]
    RateLimited { retry_after: Option<u64> },
    #[error("upstream failed: {0}")]
    Upstream(String),
    #[error("upstream timed out ({0})")]
    Timeout(&'static str),
    #[error("provider configuration: {0}")]
    Config(String),
}

pub type EventStream = BoxStream<'static, Result<ProviderEvent, ProviderError>>;

/// A model provider: one call per agent step.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The whole answer at once.
    async fn complete(&self, req: ChatRequest<'_>) -> Result<Completion, ProviderError>;
    /// The answer as events; the request is fully sent before this returns.
    async fn stream(&self, req: ChatRequest<'_>) -> Result<EventStream, ProviderError>;
}

/// Providers by configured name.
#[derive(Debug, Default, Clone)]
pub struct ProviderRegistry {
    providers: HashMap<String, Arc<dyn Provider>>,
}

impl ProviderRegistry {
    /// Build every configured provider; `env` resolves `api_key_env`.
    pub fn new(
        settings: &[ProviderSettings],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProviderError> {
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        for s in settings {
            let provider: Arc<dyn Provider> = match s.kind {
                ProviderKind::Openai => Arc::new(openai::OpenAiProvider::new(s, &env)?),
                ProviderKind::Scripted => Arc::new(scripted::ScriptedProvider),
            };
            providers.insert(s.name.clone(), provider);
        }
        Ok(Self { providers })
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(name).cloned()
    }
}
