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

/// How much one upstream response may make us hold, bytes. Every bound is
/// checked as the bytes arrive, so a hostile upstream costs at most these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One server-sent event (and so one line) of a streamed response.
    pub event: usize,
    /// One whole response body, streamed or not.
    pub response: usize,
    /// One tool call's arguments, or one thinking block, assembled from a stream.
    pub tool_call: usize,
}

impl Limits {
    pub fn of(s: &ProviderSettings) -> Self {
        Self {
            event: s.max_event_bytes,
            response: s.max_response_bytes,
            tool_call: s.max_tool_call_bytes,
        }
    }

    /// Append `fragment` to an accumulator (a tool call's arguments, a
    /// thinking block) unless that would pass the tool-call bound.
    pub fn append(&self, acc: &mut String, fragment: &str) -> Result<(), ProviderError> {
        if acc.len().saturating_add(fragment.len()) > self.tool_call {
            return Err(ProviderError::Upstream(format!(
                "a streamed tool call or thinking block is larger than {} bytes",
                self.tool_call
            )));
        }
        acc.push_str(fragment);
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            event: 1_048_576,
            response: 16 * 1_048_576,
            tool_call: 1_048_576,
        }
    }
}

/// A provider's HTTP clients, its per-attempt timeouts and its size limits.
///
/// One pooled client per actix worker: each worker is a single-threaded
/// runtime, and a pooled connection's task runs on the runtime that opened
/// it. With one client shared by every worker, a request on one worker
/// often used a connection driven by another, and every such call paid
/// cross-thread wake-ups (an eventfd write, a context switch) both ways
/// (docs/benchmarks.md). The price: each worker keeps its own idle
/// connections (and TLS sessions) to a provider, and builds its client on
/// its first call to it (loading the system's CA certificates once).
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    clients: std::sync::Arc<Clients>,
    first_byte: Duration,
    idle: Duration,
    limits: Limits,
}

/// Builds a provider's client, once per thread that calls it.
#[derive(Debug)]
struct Clients {
    connect_timeout: Duration,
    /// Built at start; used by a thread whose own client cannot be built.
    shared: reqwest::Client,
}

thread_local! {
    /// This thread's clients, by the provider's [`Clients`] (its address,
    /// checked against a weak reference so that a provider a reload dropped
    /// is never confused with a new one at the same address).
    static CLIENTS: std::cell::RefCell<Vec<(std::sync::Weak<Clients>, reqwest::Client)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Clients {
    fn build(&self) -> Result<reqwest::Client, reqwest::Error> {
        build_client(self.connect_timeout)
    }
}

/// A pooled client for one provider.
fn build_client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        // A redirect would carry the API key (`x-api-key` survives
        // reqwest's cross-origin stripping) to another host: a 3xx is an
        // error, reported as the status it is.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

impl HttpUpstream {
    pub fn new(s: &ProviderSettings) -> Result<Self, ProviderError> {
        crate::install_crypto_provider();
        let connect_timeout = Duration::from_millis(s.connect_timeout_ms);
        // Built now, so that a client that cannot be built is a start-up error.
        let shared = build_client(connect_timeout)
            .map_err(|e| ProviderError::Config(format!("provider {}: http client: {e}", s.name)))?;
        let clients = std::sync::Arc::new(Clients {
            connect_timeout,
            shared,
        });
        Ok(Self {
            clients,
            first_byte: Duration::from_millis(s.first_byte_timeout_ms),
            idle: Duration::from_millis(s.idle_timeout_ms),
            limits: Limits::of(s),
        })
    }

    /// This thread's client for this provider. Only single-threaded
    /// runtimes (the actix workers) get their own: on a multi-threaded one
    /// (the async job workers) tasks move between threads, so they share one.
    fn client(&self) -> reqwest::Client {
        let own = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if !own {
            return self.clients.shared.clone();
        }
        CLIENTS.with(|cell| {
            let mut clients = cell.borrow_mut();
            let mine = std::sync::Arc::as_ptr(&self.clients);
            if let Some((_, c)) = clients
                .iter()
                .find(|(owner, _)| owner.strong_count() > 0 && std::ptr::eq(owner.as_ptr(), mine))
            {
                return c.clone();
            }
            // Forget the clients of providers that are gone (a reload).
            clients.retain(|(owner, _)| owner.strong_count() > 0);
            let client = self
                .clients
                .build()
                .unwrap_or_else(|_| self.clients.shared.clone());
            clients.push((std::sync::Arc::downgrade(&self.clients), client.clone()));
            client
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A POST of a JSON `body` to `url`.
    pub fn post(&self, url: &reqwest::Url, body: bytes::Bytes) -> reqwest::RequestBuilder {
        self.client()
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
        let max = self.limits.response;
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large("response body", max));
        }
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
                    if body.len() + chunk.len() > max {
                        return Err(too_large("response body", max));
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
    }

    /// The SSE events of a streaming response, within the idle and total
    /// timeouts and the size limits. A lost connection is a transient error;
    /// a limit passed is an `Upstream` error, and dropping the stream drops
    /// the connection.
    fn events(
        &self,
        response: reqwest::Response,
        deadline: Instant,
    ) -> impl Stream<Item = Result<Event, ProviderError>> + Send + 'static {
        let idle = self.idle;
        let mut sse = bounded(response.bytes_stream(), self.limits).eventsource();
        async_stream::try_stream! {
            loop {
                let until = deadline.min(Instant::now() + idle);
                let next = match timeout_at(until, sse.next()).await {
                    Err(_) => Err(ProviderError::Timeout(which(until, deadline, "idle")))?,
                    Ok(next) => next,
                };
                let Some(event) = next else { break };
                let event = event.map_err(|e| match e {
                    eventsource_stream::EventStreamError::Transport(StreamRead::Limit(e)) => e,
                    eventsource_stream::EventStreamError::Transport(StreamRead::Http(t)) => {
                        ProviderError::Transient(format!("stream read failed: {}", without_url(&t)))
                    }
                    other => ProviderError::Transient(format!("stream read failed: {other}")),
                })?;
                yield event;
            }
        }
    }
}

/// Why reading a streamed body stopped.
#[derive(Debug)]
enum StreamRead {
    Http(reqwest::Error),
    Limit(ProviderError),
}

impl std::fmt::Display for StreamRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamRead::Http(e) => write!(f, "{}", without_url(e)),
            StreamRead::Limit(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StreamRead {}

fn too_large(what: &str, max: usize) -> ProviderError {
    ProviderError::Upstream(format!("{what} larger than {max} bytes"))
}

/// The body's chunks, failing as soon as the body passes `limits.response`
/// or one event passes `limits.event`. Events end at a blank line; the count
/// is kept across chunks in one pass over each byte, so the SSE parser never
/// buffers more than one event's worth and an endless line costs linear time.
fn bounded<E: Into<StreamRead>>(
    body: impl Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    limits: Limits,
) -> impl Stream<Item = Result<bytes::Bytes, StreamRead>> + Send + 'static {
    let mut scan = EventScan::default();
    let mut total = 0usize;
    let mut failed = false;
    body.map(move |chunk| {
        if failed {
            return Err(StreamRead::Limit(too_large(
                "streamed response",
                limits.response,
            )));
        }
        let chunk = chunk.map_err(Into::into)?;
        total = total.saturating_add(chunk.len());
        let result = if total > limits.response {
            Err(too_large("streamed response", limits.response))
        } else if scan.feed(&chunk) > limits.event {
            Err(too_large("one streamed event", limits.event))
        } else {
            Ok(chunk)
        };
        failed = result.is_err();
        result.map_err(StreamRead::Limit)
    })
}

impl From<reqwest::Error> for StreamRead {
    fn from(e: reqwest::Error) -> Self {
        StreamRead::Http(e)
    }
}

/// Tracks the length of the event being received: bytes since the last blank
/// line (`\n\n`, `\r\r` or `\r\n\r\n`).
#[derive(Debug, Default)]
struct EventScan {
    /// Bytes of the current event so far, line ends included.
    event: usize,
    /// Whether the current line is empty so far.
    at_line_start: bool,
    /// The previous byte was `\r` (a following `\n` belongs to it).
    after_cr: bool,
    /// The largest event seen in the last `feed`.
    largest: usize,
}

impl EventScan {
    /// Feed a chunk; returns the largest event length seen in it.
    fn feed(&mut self, chunk: &[u8]) -> usize {
        self.largest = self.event;
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    if self.at_line_start {
                        // A blank line: the event is complete.
                        self.event = 0;
                        continue;
                    }
                    self.at_line_start = true;
                    self.event += 1;
                }
                _ => {
                    self.after_cr = false;
                    self.at_line_start = false;
                    self.event += 1;
                }
            }
            self.largest = self.largest.max(self.event);
        }
        self.largest
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
