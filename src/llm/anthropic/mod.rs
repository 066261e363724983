//! `anthropic`: the Messages API (`POST {base_url}/messages`).
//!
//! One attempt per call over the shared [`HttpUpstream`] plumbing. The system
//! prompt goes in `system`; tool calls and results are `tool_use` and
//! `tool_result` blocks; images are base64 `image` blocks; thinking blocks
//! (with their signatures) come back as reasoning items of the history and
//! are sent back verbatim at the head of their assistant message, as the API
//! requires. Usage counts cache reads and writes as input tokens too.

mod stream;
mod wire;

use secrecy::{ExposeSecret, SecretString};

use super::http::HttpUpstream;
use super::{
    ChatRequest, Completion, EncodedBody, EventStream, FinishReason, Provider, ProviderError,
    Reasoning,
};
use crate::config::ProviderSettings;
use crate::domain::{ToolCall, Usage};

/// The `anthropic-version` sent when the provider sets none.
pub const DEFAULT_VERSION: &str = "2023-06-01";
const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";

pub struct AnthropicProvider {
    name: String,
    http: HttpUpstream,
    url: reqwest::Url,
    api_key: Option<SecretString>,
    version: String,
}

impl std::fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("version", &self.version)
            .finish()
    }
}

impl AnthropicProvider {
    pub fn new(
        s: &ProviderSettings,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProviderError> {
        let base = s.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let url = reqwest::Url::parse(&format!("{}/messages", base.trim_end_matches('/')))
            .map_err(|e| ProviderError::Config(format!("provider {}: base_url: {e}", s.name)))?;
        Ok(Self {
            name: s.name.clone(),
            http: HttpUpstream::new(s)?,
            url,
            api_key: super::api_key(s, env)?,
            version: s
                .anthropic_version
                .clone()
                .unwrap_or_else(|| DEFAULT_VERSION.into()),
        })
    }

    fn request(&self, body: bytes::Bytes) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(&self.url, body)
            .header("anthropic-version", &self.version);
        match &self.api_key {
            Some(key) => request.header("x-api-key", key.expose_secret()),
            None => request,
        }
    }
}

/// Serialise the upstream request body for `req`.
pub fn encode_request(req: &ChatRequest<'_>, stream: bool) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(&wire::Request::new(req, stream))
        .map_err(|e| ProviderError::Upstream(format!("request serialisation: {e}")))
}

/// Normalise a stop reason (lenient: missing means stop, or tool calls if any).
fn finish_reason(reason: Option<&str>, has_calls: bool) -> FinishReason {
    match reason {
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        Some("tool_use") => FinishReason::ToolCalls,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Anthropic usage in our terms: input counts cached tokens as well.
fn usage(u: wire::UsageIn) -> Usage {
    let input = match (
        u.input_tokens,
        u.cache_creation_input_tokens,
        u.cache_read_input_tokens,
    ) {
        (None, None, None) => None,
        (a, b, c) => Some(
            a.unwrap_or(0)
                .saturating_add(b.unwrap_or(0))
                .saturating_add(c.unwrap_or(0)),
        ),
    };
    Usage {
        input_tokens: input,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_input_tokens,
        cache_write_tokens: u.cache_creation_input_tokens,
    }
}

/// Tool arguments in one canonical spelling, so that streamed and
/// non-streamed answers record the same text.
fn canonical_arguments(json: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) if !v.is_null() => v.to_string(),
        Ok(_) => "{}".into(),
        Err(_) if json.trim().is_empty() => "{}".into(),
        Err(_) => json.to_owned(),
    }
}

/// A reasoning block as the history keeps it.
fn reasoning(block: &serde_json::Value) -> Reasoning {
    Reasoning {
        provider: wire::KIND,
        blob: block.to_string(),
    }
}

/// Parse a non-streamed Messages response body.
pub fn parse(body: &[u8]) -> Result<Completion, ProviderError> {
    let response: wire::Response = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Upstream(format!("unparseable response: {e}")))?;
    let mut c = Completion::default();
    for block in &response.content {
        match block["type"].as_str() {
            Some("text") => c.text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => c.tool_calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or_default().to_owned(),
                name: block["name"].as_str().unwrap_or_default().to_owned(),
                arguments: canonical_arguments(&block["input"].to_string()),
            }),
            Some("thinking" | "redacted_thinking") => c.reasoning.push(reasoning(block)),
            _ => {}
        }
    }
    if c.tool_calls.len() > super::MAX_TOOL_CALLS {
        return Err(ProviderError::Upstream(format!(
            "more than {} tool calls in one answer",
            super::MAX_TOOL_CALLS
        )));
    }
    c.finish = Some(finish_reason(
        response.stop_reason.as_deref(),
        !c.tool_calls.is_empty(),
    ));
    c.usage = usage(response.usage.unwrap_or_default());
    Ok(c)
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
    async fn complete(
        &self,
        req: ChatRequest<'_>,
        body: &EncodedBody,
    ) -> Result<Completion, ProviderError> {
        let request = self.request(body.get_or_encode(|| encode_request(&req, false))?);
        parse(&self.http.call(request, req.deadline).await?)
    }

    async fn stream(
        &self,
        req: ChatRequest<'_>,
        body: &EncodedBody,
    ) -> Result<EventStream, ProviderError> {
        let request = self.request(body.get_or_encode(|| encode_request(&req, true))?);
        Ok(stream::events(
            self.http.call_streaming(request, req.deadline).await?,
            self.http.limits(),
        ))
    }
}

#[cfg(test)]
mod tests;
