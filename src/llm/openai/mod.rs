//! `openai`: any OpenAI-compatible chat-completions server.
//!
//! One reqwest client per provider (TCP_NODELAY, connect timeout, pooled).
//! Each call has a first-byte timeout (until the response headers arrive), an
//! idle timeout between body chunks and a total timeout. Connection failures
//! and 500/502/503/504 are retried up to `max_retries` times with jittered
//! exponential backoff; nothing has reached the client before the body is read,
//! so retrying is always safe here.

mod stream;
mod wire;

use std::time::Duration;

use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::{Instant, timeout_at};

use super::{ChatRequest, Completion, EventStream, FinishReason, Provider, ProviderError};
use crate::config::ProviderSettings;
use crate::domain::{ToolCall, Usage};

/// Largest upstream response body read, bytes.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

pub struct OpenAiProvider {
    name: String,
    client: reqwest::Client,
    url: reqwest::Url,
    api_key: Option<SecretString>,
    first_byte: Duration,
    idle: Duration,
    total: Duration,
    max_retries: u32,
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
        let api_key = match &s.api_key_env {
            None => None,
            Some(var) => Some(SecretString::from(env(var).ok_or_else(|| {
                ProviderError::Config(format!(
                    "provider {}: environment variable {var} (api_key_env) is not set",
                    s.name
                ))
            })?)),
        };
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(s.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ProviderError::Config(format!("provider {}: http client: {e}", s.name)))?;
        Ok(Self {
            name: s.name.clone(),
            client,
            url,
            api_key,
            first_byte: Duration::from_millis(s.first_byte_timeout_ms),
            idle: Duration::from_millis(s.idle_timeout_ms),
            total: Duration::from_millis(s.total_timeout_ms),
            max_retries: s.max_retries,
        })
    }

    /// Send the request and wait for a successful status (first-byte timeout).
    async fn send(
        &self,
        body: &[u8],
        deadline: Instant,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let first_byte = deadline.min(Instant::now() + self.first_byte);
        let response = match timeout_at(first_byte, request.send()).await {
            Err(_) => {
                return Err(ProviderError::Timeout(if first_byte < deadline {
                    "first byte"
                } else {
                    "total"
                }));
            }
            Ok(Err(e)) if e.is_timeout() => return Err(ProviderError::Timeout("connect")),
            Ok(Err(e)) => {
                return Err(ProviderError::Upstream(format!(
                    "connection failed: {}",
                    without_url(&e)
                )));
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status.as_u16(), response.headers()));
        }
        Ok(response)
    }

    /// One HTTP attempt: send, wait for headers, read the body within the timeouts.
    async fn attempt(&self, body: &[u8], deadline: Instant) -> Result<bytes::Bytes, ProviderError> {
        let response = self.send(body, deadline).await?;
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        loop {
            let idle = deadline.min(Instant::now() + self.idle);
            match timeout_at(idle, chunks.next()).await {
                Err(_) => {
                    return Err(ProviderError::Timeout(if idle < deadline {
                        "idle"
                    } else {
                        "total"
                    }));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::Upstream(format!(
                        "body read failed: {}",
                        without_url(&e)
                    )));
                }
                Ok(Some(Ok(chunk))) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(ProviderError::Upstream("response body too large".into()));
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
        Ok(body.into())
    }
}

fn without_url(e: &reqwest::Error) -> String {
    // reqwest errors print the URL; ours carry no secrets, but keep logs compact.
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<upstream>");
    }
    s
}

/// Map an upstream status to our error class (never copying the upstream body).
fn status_error(status: u16, headers: &reqwest::header::HeaderMap) -> ProviderError {
    match status {
        401 | 403 | 404 => ProviderError::Misconfigured { status },
        429 => ProviderError::RateLimited {
            retry_after: headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        },
        408 => ProviderError::Timeout("upstream 408"),
        400..=499 => ProviderError::Rejected { status },
        _ => ProviderError::Upstream(format!("status {status}")),
    }
}

fn retryable(e: &ProviderError) -> bool {
    match e {
        ProviderError::Upstream(msg) => {
            msg.starts_with("connection failed")
                || ["status 500", "status 502", "status 503", "status 504"].contains(&msg.as_str())
        }
        ProviderError::Timeout("connect") => true,
        _ => false,
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.min(6);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base + jitter)
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
    serde_json::to_vec(&wire::Request::new(req, stream))
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
    let usage = response.usage.unwrap_or_default();
    Ok(Completion {
        text: message.content.unwrap_or_default(),
        tool_calls,
        usage: Usage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        },
        finish,
    })
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    async fn complete(&self, req: ChatRequest<'_>) -> Result<Completion, ProviderError> {
        let body = encode_request(&req, false)?;
        let deadline = Instant::now() + self.total;
        let mut attempt = 0;
        loop {
            match self.attempt(&body, deadline).await {
                Ok(bytes) => return parse(&bytes),
                Err(e) if retryable(&e) && attempt < self.max_retries => {
                    let wait = backoff(attempt);
                    if Instant::now() + wait >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(provider = %self.name, attempt, error = %e, "retrying upstream call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn stream(&self, req: ChatRequest<'_>) -> Result<EventStream, ProviderError> {
        let body = encode_request(&req, true)?;
        let deadline = Instant::now() + self.total;
        // Retries happen only here, before any of this call's output exists.
        let mut attempt = 0;
        let response = loop {
            match self.send(&body, deadline).await {
                Ok(r) => break r,
                Err(e) if retryable(&e) && attempt < self.max_retries => {
                    let wait = backoff(attempt);
                    if Instant::now() + wait >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(provider = %self.name, attempt, error = %e, "retrying upstream call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(stream::events(response, self.idle, deadline))
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
