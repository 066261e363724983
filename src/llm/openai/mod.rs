//! `openai`: any OpenAI-compatible chat-completions server.
//!
//! One attempt per call over the shared [`HttpUpstream`] plumbing (timeouts,
//! status classes); retries and fallback are the route's business.

mod stream;
mod wire;

use secrecy::{ExposeSecret, SecretString};

use super::http::HttpUpstream;
use super::{
    ChatRequest, Completion, EncodedBody, EventStream, FinishReason, MAX_TOOL_CALLS, Provider,
    ProviderError,
};
use crate::config::ProviderSettings;
use crate::domain::{ToolCall, Usage};

pub struct OpenAiProvider {
    name: String,
    http: HttpUpstream,
    url: reqwest::Url,
    api_key: Option<SecretString>,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl OpenAiProvider {
    pub fn new(
        s: &ProviderSettings,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProviderError> {
        let base = s.base_url.as_deref().ok_or_else(|| {
            ProviderError::Config(format!("provider {}: base_url is required", s.name))
        })?;
        let url = reqwest::Url::parse(&format!("{}/chat/completions", base.trim_end_matches('/')))
            .map_err(|e| ProviderError::Config(format!("provider {}: base_url: {e}", s.name)))?;
        Ok(Self {
            name: s.name.clone(),
            http: HttpUpstream::new(s)?,
            url,
            api_key: super::api_key(s, env)?,
        })
    }

    fn request(&self, body: bytes::Bytes) -> reqwest::RequestBuilder {
        let request = self.http.post(&self.url, body);
        match &self.api_key {
            Some(key) => request.bearer_auth(key.expose_secret()),
            None => request,
        }
    }
}

/// OpenAI usage in our terms (`prompt_tokens` already counts cached tokens).
fn usage(u: wire::UsageIn) -> Usage {
    Usage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        cache_read_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
        cache_write_tokens: None,
    }
}

/// Normalise an OpenAI finish reason (lenient: empty or missing means stop).
fn finish_reason(reason: Option<&str>, has_calls: bool) -> Option<FinishReason> {
    Some(match reason {
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    })
}

/// Serialise the upstream request body for `req` (once per attempt series).
pub fn encode_request(req: &ChatRequest<'_>, stream: bool) -> Result<Vec<u8>, ProviderError> {
    // sonic-rs: SIMD string escaping over the whole history.
    sonic_rs::to_vec(&wire::Request::new(req, stream))
        .map_err(|e| ProviderError::Upstream(format!("request serialisation: {e}")))
}

/// Parse a non-streamed chat-completions response body.
pub fn parse(body: &[u8]) -> Result<Completion, ProviderError> {
    let response: wire::Response = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Upstream(format!("unparseable response: {e}")))?;
    let choice = response
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Upstream("response has no choices".into()))?;
    let message = choice.message.unwrap_or_default();
    if message
        .tool_calls
        .as_ref()
        .is_some_and(|c| c.len() > MAX_TOOL_CALLS)
    {
        return Err(ProviderError::Upstream(format!(
            "more than {MAX_TOOL_CALLS} tool calls in one answer"
        )));
    }
    let tool_calls: Vec<ToolCall> = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            id: c
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{i}")),
            name: c.function.name,
            arguments: c.function.arguments.unwrap_or_else(|| "{}".into()),
        })
        .collect();
    let finish = finish_reason(choice.finish_reason.as_deref(), !tool_calls.is_empty());
    Ok(Completion {
        text: message.content.unwrap_or_default(),
        reasoning: Vec::new(),
        tool_calls,
        usage: usage(response.usage.unwrap_or_default()),
        finish,
    })
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
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
mod tests {
    use super::*;
    use crate::domain::{HistoryItem, UserPart};

    #[test]
    fn request_borrows_history_and_writes_images_as_data_urls() {
        let history = vec![HistoryItem::User {
            parts: vec![
                UserPart::Text {
                    text: "look".into(),
                },
                UserPart::Image {
                    media_type: "image/png".into(),
                    data: "iVBORw0KGgo=".into(),
                },
            ],
        }];
        let req = ChatRequest {
            model: "gpt-x",
            system: Some("sys"),
            messages: &history,
            temperature: Some(0.5),
            max_tokens: None,
            tools: &[],
            thinking_budget: None,
            tool_choice: None,
            params: None,
            deadline: tokio::time::Instant::now(),
        };
        let json: serde_json::Value =
            serde_json::to_value(wire::Request::new(&req, false)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "model": "gpt-x",
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                    ]}
                ],
                "temperature": 0.5,
                "stream": false
            })
        );

        // Params ride along, less parallel_tool_calls, which needs tools,
        // and so does a tool choice.
        let params = serde_json::json!({"seed": 7, "parallel_tool_calls": false});
        let params = params.as_object().unwrap();
        let req = ChatRequest {
            params: Some(params),
            tool_choice: Some(crate::llm::params::CallChoice::Required),
            ..req
        };
        let body: serde_json::Value =
            serde_json::from_slice(&encode_request(&req, true).unwrap()).unwrap();
        assert_eq!(body["seed"], 7);
        assert!(body.get("parallel_tool_calls").is_none(), "{body}");
        assert!(body.get("tool_choice").is_none(), "{body}");
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn lenient_parsing_of_compatible_servers() {
        let c =
            parse(br#"{"choices":[{"message":{"content":"hi"},"finish_reason":""}],"extra":1}"#)
                .unwrap();
        assert_eq!(c.text, "hi");
        assert_eq!(c.finish, Some(FinishReason::Stop));
        assert_eq!(c.usage, Usage::default());
        let c = parse(br#"{"choices":[{"message":{"content":null,"tool_calls":[{"function":{"name":"f"}}]},"finish_reason":null}],"usage":{}}"#).unwrap();
        assert_eq!(c.finish, Some(FinishReason::ToolCalls));
        assert_eq!(c.tool_calls[0].arguments, "{}");
        assert!(parse(br#"{"choices":[]}"#).is_err());
        assert!(parse(b"<html>").is_err());
    }
}

#[cfg(test)]
mod sonic_tests {
    use proptest::prelude::*;

    proptest! {
        /// The upstream body and the Cognite response are written with
        /// sonic-rs: whatever they hold (any strings: control characters,
        /// quotes, non-ASCII), what it writes reads back as exactly what
        /// serde_json reads from its own output.
        #[test]
        fn sonic_rs_writes_json_serde_json_reads_back_the_same(
            value in crate::testkit::json(),
            text in any::<String>(),
        ) {
            let doc = serde_json::json!({"v": value, "t": text});
            let ours: serde_json::Value =
                serde_json::from_slice(&sonic_rs::to_vec(&doc).unwrap()).unwrap();
            prop_assert_eq!(ours, doc);
        }
    }
}
