//! The HTTP plumbing every HTTP provider shares: one pooled client per
//! provider, the first-byte, idle and total timeouts, the mapping of upstream
//! statuses to [`ProviderError`] classes (never copying an upstream body), and
//! SSE reading. Providers keep only their wire formats.

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::{Instant, timeout_at};

use super::ProviderError;
use crate::config::ProviderSettings;

/// Largest upstream response body read, bytes.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A provider's HTTP client and its per-attempt timeouts.
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    client: reqwest::Client,
    first_byte: Duration,
    idle: Duration,
}

impl HttpUpstream {
    pub fn new(s: &ProviderSettings) -> Result<Self, ProviderError> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(s.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ProviderError::Config(format!("provider {}: http client: {e}", s.name)))?;
        Ok(Self {
            client,
            first_byte: Duration::from_millis(s.first_byte_timeout_ms),
            idle: Duration::from_millis(s.idle_timeout_ms),
        })
    }

    /// A POST of a JSON `body` to `url`.
    pub fn post(&self, url: &reqwest::Url, body: bytes::Bytes) -> reqwest::RequestBuilder {
        self.client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
    }

    /// Send and wait for a successful status, within the first-byte timeout.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<reqwest::Response, ProviderError> {
        let first_byte = deadline.min(Instant::now() + self.first_byte);
        let response = match timeout_at(first_byte, request.send()).await {
            Err(_) => {
                return Err(ProviderError::Timeout(which(
                    first_byte,
                    deadline,
                    "first byte",
                )));
            }
            Ok(Err(e)) if e.is_connect() && e.is_timeout() => {
                return Err(ProviderError::Transient("connect timeout".into()));
            }
            Ok(Err(e)) => {
                return Err(ProviderError::Transient(format!(
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

    /// Send and read the whole successful response body.
    pub async fn call(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<Vec<u8>, ProviderError> {
        let response = self.send(request, deadline).await?;
        self.body(response, deadline).await
    }

    /// Send and return the SSE events of the successful response.
    pub async fn call_streaming(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<impl Stream<Item = Result<Event, ProviderError>> + Send + 'static, ProviderError>
    {
        let response = self.send(request, deadline).await?;
        Ok(self.events(response, deadline))
    }

    /// Read a whole response body within the idle and total timeouts.
    async fn body(
        &self,
        response: reqwest::Response,
        deadline: Instant,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        loop {
            let idle = deadline.min(Instant::now() + self.idle);
            match timeout_at(idle, chunks.next()).await {
                Err(_) => return Err(ProviderError::Timeout(which(idle, deadline, "idle"))),
                Ok(None) => return Ok(body),
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::Transient(format!(
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
    }

    /// The SSE events of a streaming response, within the idle and total
    /// timeouts. A lost connection is a transient error.
    fn events(
        &self,
        response: reqwest::Response,
        deadline: Instant,
    ) -> impl Stream<Item = Result<Event, ProviderError>> + Send + 'static {
        let idle = self.idle;
        let mut sse = response.bytes_stream().eventsource();
        async_stream::try_stream! {
            loop {
                let until = deadline.min(Instant::now() + idle);
                let next = match timeout_at(until, sse.next()).await {
                    Err(_) => Err(ProviderError::Timeout(which(until, deadline, "idle")))?,
                    Ok(next) => next,
                };
                let Some(event) = next else { break };
                let event = event.map_err(|e| ProviderError::Transient(format!("stream read failed: {}", match &e {
                    eventsource_stream::EventStreamError::Transport(t) => without_url(t),
                    other => other.to_string(),
                })))?;
                yield event;
            }
        }
    }
}

/// Name a timeout by the bound that fired.
fn which(bound: Instant, deadline: Instant, name: &'static str) -> &'static str {
    if bound < deadline { name } else { "total" }
}

/// A reqwest error without its URL (compact logs).
pub fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<upstream>");
    }
    s
}

/// Map an upstream status to our error class (never copying the upstream body).
pub fn status_error(status: u16, headers: &HeaderMap) -> ProviderError {
    match status {
        401 | 403 | 404 => ProviderError::Misconfigured { status },
        429 => ProviderError::RateLimited {
            retry_after: retry_after(headers),
        },
        503 | 529 => ProviderError::Overloaded {
            retry_after: retry_after(headers),
        },
        408 | 500 | 502 | 504 => ProviderError::Transient(format!("status {status}")),
        400..=499 => ProviderError::Rejected { status },
        _ => ProviderError::Upstream(format!("status {status}")),
    }
}

/// `Retry-After` as delay-seconds (fractions accepted) or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = (at.timestamp_millis() - chrono::Utc::now().timestamp_millis()).clamp(0, 86_400_000);
    Some(Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, v.parse().unwrap());
        h
    }

    #[test]
    fn retry_after_in_seconds_fractions_and_dates() {
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&headers(" 0.25 ")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(
            retry_after(&headers("Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let d = retry_after(&headers(&later)).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn statuses_map_to_classes() {
        let h = headers("3");
        assert!(matches!(
            status_error(401, &h),
            ProviderError::Misconfigured { status: 401 }
        ));
        assert!(matches!(
            status_error(400, &h),
            ProviderError::Rejected { status: 400 }
        ));
        assert_eq!(
            status_error(429, &h).retry_after(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            status_error(529, &h).retry_after(),
            Some(Duration::from_secs(3))
        );
        for s in [408, 429, 500, 502, 503, 504, 529] {
            assert!(status_error(s, &h).retryable(), "{s} is retried");
        }
        for s in [400, 401, 403, 404, 413, 422, 501] {
            assert!(!status_error(s, &h).retryable(), "{s} is not retried");
            assert!(!status_error(s, &h).fails_over(), "{s} does not fail over");
        }
    }
}
