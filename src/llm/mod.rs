//! LLM providers behind one trait. Each provider owns its wire types; the
//! runtime sees only [`ChatRequest`] and [`ProviderEvent`].
//!
//! A provider makes exactly one upstream attempt per call. Retries, fallback
//! to other providers and circuit breaking live in [`route`], once for every
//! provider kind; the HTTP plumbing both HTTP providers share is in [`http`].

pub mod anthropic;
pub mod http;
pub mod openai;
pub mod params;
pub mod route;
pub mod scripted;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use tokio::time::Instant;

use crate::config::{AgentSettings, ProviderKind, ProviderSettings};
use crate::domain::{HistoryItem, ToolCall, Usage};
pub use route::Route;

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
    /// Extended thinking budget, for providers that support it.
    pub thinking_budget: Option<u32>,
    /// How the model may use `tools` (`None`: not sent; never sent without tools).
    pub tool_choice: Option<params::CallChoice<'a>>,
    /// The agent's provider parameters, written into the body as they are.
    pub params: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// The attempt must end by then (the route sets the tighter of the turn's
    /// deadline and the provider's `total_timeout_ms`).
    pub deadline: Instant,
}

/// Why the model stopped, as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// An opaque reasoning block that must go back to the provider kind that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reasoning {
    /// The provider kind (`anthropic`), not the configured provider name, so that
    /// failing over between two providers of one kind keeps the blocks.
    pub provider: &'static str,
    pub blob: String,
}

/// One event of a provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    TextDelta(String),
    /// A complete reasoning block, in the order the model wrote it.
    Reasoning(Reasoning),
    /// A complete tool call (providers assemble streamed fragments themselves).
    ToolCall(ToolCall),
    /// Usage reported so far that no earlier `Usage` event of this call
    /// included: events add up, whatever the attempt they come from.
    Usage(Usage),
    Finish(FinishReason),
}

/// A provider's complete, non-streamed answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub reasoning: Vec<Reasoning>,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub finish: Option<FinishReason>,
}

impl Completion {
    /// The events a stream of this completion would have produced.
    pub fn into_events(self) -> Vec<ProviderEvent> {
        let mut events = Vec::with_capacity(3 + self.tool_calls.len() + self.reasoning.len());
        events.extend(self.reasoning.into_iter().map(ProviderEvent::Reasoning));
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

/// Most tool calls one model answer may carry (a streamed call's index must be below it).
pub const MAX_TOOL_CALLS: usize = 64;

/// Errors of the provider layer. Messages are for logs; clients only see the class.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Our request was refused (4xx other than the ones below): not retried.
    #[error("upstream rejected the request with status {status}")]
    Rejected { status: u16 },
    /// 401, 403 or 404: the provider's key, URL or model is wrong.
    #[error("upstream refused our credentials or endpoint with status {status}")]
    Misconfigured { status: u16 },
    /// 429.
    #[error("upstream rate limited the request")]
    RateLimited { retry_after: Option<Duration> },
    /// 503, 529 or an in-stream `overloaded_error`.
    #[error("upstream is overloaded or unavailable")]
    Overloaded { retry_after: Option<Duration> },
    /// A failure worth retrying: connect errors, 408, 500, 502, 504, a
    /// connection lost or a stream cut before the answer was complete.
    #[error("upstream failed transiently: {0}")]
    Transient(String),
    /// A failure that retrying would repeat (an unparseable answer, 501, ...).
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// First byte, idle or total timeout.
    #[error("upstream timed out ({0})")]
    Timeout(&'static str),
    /// Every provider of the route has its circuit breaker open.
    #[error("every provider of the agent is cooling down after repeated failures")]
    CircuitOpen { retry_after: Duration },
    #[error("provider configuration: {0}")]
    Config(String),
}

impl ProviderError {
    /// Whether the same provider may be asked again.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Overloaded { .. }
                | ProviderError::Transient(_)
        )
    }

    /// Whether the next fallback provider may be asked (and the failure counts
    /// against this provider's circuit breaker): retryable failures and
    /// timeouts. A stalled provider is not asked again, but another one may be.
    pub fn fails_over(&self) -> bool {
        self.retryable() || matches!(self, ProviderError::Timeout(_))
    }

    /// A short name of the error's class (a metrics label).
    pub fn class(&self) -> &'static str {
        match self {
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Misconfigured { .. } => "misconfigured",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Overloaded { .. } => "overloaded",
            ProviderError::Transient(_) => "transient",
            ProviderError::Upstream(_) => "upstream",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::CircuitOpen { .. } => "circuit_open",
            ProviderError::Config(_) => "config",
        }
    }

    /// How long the upstream asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after }
            | ProviderError::Overloaded { retry_after } => *retry_after,
            ProviderError::CircuitOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

pub type EventStream = BoxStream<'static, Result<ProviderEvent, ProviderError>>;

/// The upstream request body of one call to one provider: serialised by the
/// first attempt, reused as it is by the retries (the history is serialised
/// once per provider, however many attempts it takes).
#[derive(Debug, Default)]
pub struct EncodedBody(std::sync::OnceLock<bytes::Bytes>);

impl EncodedBody {
    /// The body, encoding it with `encode` if no attempt did yet.
    pub fn get_or_encode(
        &self,
        encode: impl FnOnce() -> Result<Vec<u8>, ProviderError>,
    ) -> Result<bytes::Bytes, ProviderError> {
        if let Some(body) = self.0.get() {
            return Ok(body.clone());
        }
        let body = bytes::Bytes::from(encode()?);
        Ok(self.0.get_or_init(|| body).clone())
    }
}

/// A model provider: one upstream attempt per call, bounded by `req.deadline`.
/// Attempts of one call share `body`; providers without a wire body ignore it.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The whole answer at once.
    async fn complete(
        &self,
        req: ChatRequest<'_>,
        body: &EncodedBody,
    ) -> Result<Completion, ProviderError>;
    /// The answer as events; the request is fully sent before this returns.
    async fn stream(
        &self,
        req: ChatRequest<'_>,
        body: &EncodedBody,
    ) -> Result<EventStream, ProviderError>;
}

/// The configured providers, and the route each agent's turns take through them.
#[derive(Debug, Default, Clone)]
pub struct ProviderRegistry {
    routes: HashMap<String, Arc<Route>>,
}

impl ProviderRegistry {
    /// Build every configured provider (one circuit breaker each) and every
    /// agent's route: its provider, then its `fallback_providers`, with the
    /// agent's timeout overrides applied. `env` resolves `api_key_env`.
    pub fn new(
        providers: &[ProviderSettings],
        agents: &[AgentSettings],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProviderError> {
        let mut shared = HashMap::new();
        for s in providers {
            let breaker = Arc::new(route::Breaker::new(
                s.breaker_threshold,
                Duration::from_secs(s.breaker_cooldown_seconds),
            ));
            shared.insert(s.name.as_str(), (s, build(s, &env)?, breaker));
        }
        let mut routes = HashMap::new();
        for a in agents {
            let mut links = Vec::new();
            for name in std::iter::once(&a.provider).chain(&a.fallback_providers) {
                let (settings, provider, breaker) = shared.get(name.as_str()).ok_or_else(|| {
                    ProviderError::Config(format!("agent {}: no provider named {name:?}", a.id))
                })?;
                let effective = a.provider_settings(settings);
                let provider = if a.overrides_timeouts() {
                    build(&effective, &env)?
                } else {
                    provider.clone()
                };
                links.push(route::Link {
                    name: name.clone(),
                    model: a.fallback_models.get(name).cloned(),
                    provider,
                    max_retries: effective.max_retries,
                    total: Duration::from_millis(effective.total_timeout_ms),
                    breaker: breaker.clone(),
                });
            }
            routes.insert(a.id.clone(), Arc::new(Route::new(links).for_agent(&a.id)));
        }
        Ok(Self { routes })
    }

    /// The route of agent `id`'s turns.
    pub fn route(&self, agent_id: &str) -> Option<Arc<Route>> {
        self.routes.get(agent_id).cloned()
    }
}

fn build(
    s: &ProviderSettings,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Provider>, ProviderError> {
    Ok(match s.kind {
        ProviderKind::Openai => Arc::new(openai::OpenAiProvider::new(s, env)?),
        ProviderKind::Anthropic => Arc::new(anthropic::AnthropicProvider::new(s, env)?),
        ProviderKind::Scripted => Arc::new(scripted::ScriptedProvider),
    })
}

/// Read the API key named by `api_key_env`, if any.
fn api_key(
    s: &ProviderSettings,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<secrecy::SecretString>, ProviderError> {
    match &s.api_key_env {
        None => Ok(None),
        Some(var) => env(var).map(|k| Some(k.into())).ok_or_else(|| {
            ProviderError::Config(format!(
                "provider {}: environment variable {var} (api_key_env) is not set",
                s.name
            ))
        }),
    }
}
