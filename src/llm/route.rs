//! Resilient upstream calls, the same for every provider kind.
//!
//! A [`Route`] is an agent's provider followed by its fallback providers. One
//! model call of a turn goes through it: each provider is asked up to
//! `1 + max_retries` times, with jittered exponential backoff, while
//!
//! - the failure is retryable (connect errors, 408, 429, 500, 502, 503, 504,
//!   529, an in-stream overload, a connection lost mid-answer),
//! - none of this call's output has been forwarded (the first text delta
//!   commits the call; reasoning blocks and tool calls are held back until
//!   then, usage passes through because it was billed either way),
//! - and the wait (the larger of the backoff and `Retry-After`) ends before
//!   the call's deadline: the turn's deadline or the provider's
//!   `total_timeout_ms`, whichever comes first.
//!
//! When a provider gives up with a retryable failure or a timeout, the next
//! one is tried under the same rule; other failures (a rejected request, bad
//! credentials) end the call at once. Each provider has a [`Breaker`]: after
//! `breaker_threshold` consecutive failed attempts it is skipped for
//! `breaker_cooldown_seconds`, then one trial call decides whether it closes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{StreamExt, stream};
use tokio::time::Instant;

use super::{ChatRequest, EncodedBody, EventStream, Provider, ProviderError, ProviderEvent};

/// One provider of a route.
#[derive(Debug, Clone)]
pub struct Link {
    /// The configured provider name (for logs).
    pub name: String,
    /// The model asked of this provider instead of the agent's.
    pub model: Option<String>,
    pub provider: Arc<dyn Provider>,
    pub max_retries: u32,
    /// Bound on one call to this provider, retries included.
    pub total: Duration,
    /// Shared by every route that uses this provider.
    pub breaker: Arc<Breaker>,
}

/// An agent's providers, in the order they are tried.
#[derive(Debug, Clone)]
pub struct Route {
    links: Vec<Link>,
    /// The agent whose route this is (a metrics label).
    agent: String,
}

impl Route {
    pub fn new(links: Vec<Link>) -> Self {
        Self {
            links,
            agent: String::new(),
        }
    }

    /// The same route, labelled as agent `agent`'s in metrics.
    pub fn for_agent(mut self, agent: &str) -> Self {
        agent.clone_into(&mut self.agent);
        self
    }

    /// A route of one provider with no retries (tests and embedded use).
    pub fn single(provider: Arc<dyn Provider>) -> Self {
        Self::new(vec![Link {
            name: "default".into(),
            model: None,
            provider,
            max_retries: 0,
            total: Duration::from_secs(24 * 3600),
            breaker: Arc::new(Breaker::new(u32::MAX, Duration::from_secs(1))),
        }])
    }

    /// One model call: the provider's events, retried and failed over as the
    /// module documentation says. `streaming` asks providers to stream;
    /// otherwise each attempt is one complete call. Ends with an error item if
    /// every attempt failed.
    pub fn call<'a>(
        &'a self,
        req: ChatRequest<'a>,
        streaming: bool,
    ) -> BoxStream<'a, Result<ProviderEvent, ProviderError>> {
        async_stream::stream! {
            let mut last: Option<ProviderError> = None;
            let mut cooling: Option<Duration> = None;
            'links: for link in &self.links {
                if let Err(wait) = link.breaker.admit() {
                    crate::observe::breaker(&link.name, true);
                    tracing::warn!(provider = %link.name, "circuit open; provider skipped");
                    cooling = Some(cooling.map_or(wait, |c| c.min(wait)));
                    continue;
                }
                let deadline = req.deadline.min(Instant::now() + link.total);
                let model = link.model.as_deref().unwrap_or(req.model);
                let req = ChatRequest { deadline, model, ..req };
                let body = EncodedBody::default();
                let mut attempt = 0;
                loop {
                    let failure = match open(link.provider.as_ref(), req, &body, streaming).await {
                        Err(e) => e,
                        Ok(mut events) => {
                            let mut held = Vec::new();
                            let mut committed = false;
                            let mut failure = None;
                            while let Some(item) = events.next().await {
                                match item {
                                    Ok(ProviderEvent::Usage(u)) => {
                                        crate::observe::tokens(&self.agent, &link.name, &u);
                                        yield Ok(ProviderEvent::Usage(u));
                                    }
                                    Ok(e @ ProviderEvent::TextDelta(_)) => {
                                        committed = true;
                                        for h in held.drain(..) {
                                            yield Ok(h);
                                        }
                                        yield Ok(e);
                                    }
                                    Ok(e) if committed => yield Ok(e),
                                    Ok(e) => held.push(e),
                                    Err(e) if committed => {
                                        link.breaker.record(false);
                                        crate::observe::upstream_error(&link.name, e.class());
                                        crate::observe::breaker(&link.name, link.breaker.is_open());
                                        yield Err(e);
                                        return;
                                    }
                                    Err(e) => {
                                        failure = Some(e);
                                        break;
                                    }
                                }
                            }
                            match failure {
                                Some(e) => e,
                                None => {
                                    link.breaker.record(true);
                                    crate::observe::breaker(&link.name, link.breaker.is_open());
                                    for h in held {
                                        yield Ok(h);
                                    }
                                    return;
                                }
                            }
                        }
                    };
                    crate::observe::upstream_error(&link.name, failure.class());
                    if !failure.fails_over() {
                        // Our request or our configuration is at fault, not the provider's health.
                        link.breaker.record(true);
                        crate::observe::breaker(&link.name, link.breaker.is_open());
                        yield Err(failure);
                        return;
                    }
                    link.breaker.record(false);
                    crate::observe::breaker(&link.name, link.breaker.is_open());
                    if failure.retryable() && attempt < link.max_retries {
                        let wait = backoff(attempt).max(failure.retry_after().unwrap_or_default());
                        if Instant::now() + wait < deadline {
                            tracing::warn!(provider = %link.name, attempt, error = %failure, wait_ms = wait.as_millis() as u64, "retrying upstream call");
                            crate::observe::retry(&link.name);
                            tokio::time::sleep(wait).await;
                            attempt += 1;
                            if link.breaker.admit().is_ok() {
                                continue;
                            }
                        }
                    }
                    tracing::warn!(provider = %link.name, attempts = attempt + 1, error = %failure, "provider failed; trying the next one if any");
                    last = Some(failure);
                    continue 'links;
                }
            }
            yield Err(match (last, cooling) {
                (Some(e), _) => e,
                (None, Some(retry_after)) => ProviderError::CircuitOpen { retry_after },
                (None, None) => ProviderError::Config("the agent has no provider".into()),
            });
        }
        .boxed()
    }
}

/// Start one attempt.
async fn open(
    provider: &dyn Provider,
    req: ChatRequest<'_>,
    body: &EncodedBody,
    streaming: bool,
) -> Result<EventStream, ProviderError> {
    if streaming {
        provider.stream(req, body).await
    } else {
        let c = provider.complete(req, body).await?;
        Ok(stream::iter(c.into_events().into_iter().map(Ok)).boxed())
    }
}

/// Jittered exponential backoff: 100 ms doubling per attempt, plus up to half again.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << attempt.min(6);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

/// A per-provider circuit breaker over consecutive failed attempts.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    /// Set while open: skipped until then.
    open_until: Option<Instant>,
    /// When the one trial call after a cooldown was let through; a trial that
    /// never reports back (its caller went away) expires after a cooldown.
    trial: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::default(),
        }
    }

    /// May a call go to this provider now? If not, how long until it may.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(until) = s.open_until else {
            return Ok(());
        };
        let now = Instant::now();
        if now < until {
            return Err(until - now);
        }
        if let Some(started) = s.trial
            && now < started + self.cooldown
        {
            // One trial call at a time; the others keep skipping briefly.
            return Err(Duration::from_secs(1));
        }
        s.trial = Some(now);
        Ok(())
    }

    /// Record the outcome of an admitted attempt.
    pub fn record(&self, ok: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            *s = BreakerState::default();
            return;
        }
        s.failures = s.failures.saturating_add(1);
        if s.trial.is_some() || s.failures >= self.threshold {
            if s.open_until.is_none() || s.trial.is_some() {
                tracing::warn!(
                    failures = s.failures,
                    cooldown_s = self.cooldown.as_secs(),
                    "circuit breaker open"
                );
            }
            s.open_until = Some(Instant::now() + self.cooldown);
            s.trial = None;
        }
    }

    /// Whether the breaker currently skips its provider.
    pub fn is_open(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.open_until.is_some_and(|u| Instant::now() < u)
    }
}

#[cfg(test)]
mod tests;
