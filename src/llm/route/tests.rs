//! The route's rules against scripted fake providers, on paused tokio time.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;
use crate::domain::{HistoryItem, ToolCall, Usage};
use crate::llm::{Completion, FinishReason, Reasoning};

/// One scripted attempt.
#[derive(Debug, Clone)]
enum Attempt {
    Fail(fn() -> ProviderError),
    /// These events, then optionally a failure.
    Events(Vec<ProviderEvent>, Option<fn() -> ProviderError>),
}

#[derive(Debug, Default)]
struct Fake {
    script: Mutex<VecDeque<Attempt>>,
    calls: Mutex<u32>,
    /// How many times a request body was serialised.
    encodes: Mutex<u32>,
}

impl Fake {
    fn new(script: Vec<Attempt>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            calls: Mutex::new(0),
            encodes: Mutex::new(0),
        })
    }
    fn calls(&self) -> u32 {
        *self.calls.lock().unwrap()
    }
    fn encodes(&self) -> u32 {
        *self.encodes.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl Provider for Fake {
    async fn complete(
        &self,
        req: ChatRequest<'_>,
        body: &EncodedBody,
    ) -> Result<Completion, ProviderError> {
        let mut c = Completion::default();
        let mut s = self.stream(req, body).await?;
        while let Some(e) = s.next().await {
            match e? {
                ProviderEvent::TextDelta(t) => c.text.push_str(&t),
                ProviderEvent::Usage(u) => c.usage.add(u),
                _ => {}
            }
        }
        Ok(c)
    }
    async fn stream(
        &self,
        _req: ChatRequest<'_>,
        body: &EncodedBody,
    ) -> Result<EventStream, ProviderError> {
        *self.calls.lock().unwrap() += 1;
        body.get_or_encode(|| {
            *self.encodes.lock().unwrap() += 1;
            Ok(b"{}".to_vec())
        })?;
        let next = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Attempt::Events(answer("ok"), None));
        match next {
            Attempt::Fail(e) => Err(e()),
            Attempt::Events(events, fail) => {
                Ok(stream::iter(events.into_iter().map(Ok).chain(fail.map(|f| Err(f())))).boxed())
            }
        }
    }
}

fn answer(text: &str) -> Vec<ProviderEvent> {
    vec![
        ProviderEvent::TextDelta(text.into()),
        ProviderEvent::Usage(Usage {
            input_tokens: Some(10),
            output_tokens: Some(2),
            ..Default::default()
        }),
        ProviderEvent::Finish(FinishReason::Stop),
    ]
}

fn overloaded() -> ProviderError {
    ProviderError::Overloaded { retry_after: None }
}
fn limited_long() -> ProviderError {
    ProviderError::RateLimited {
        retry_after: Some(Duration::from_secs(600)),
    }
}
fn limited_short() -> ProviderError {
    ProviderError::RateLimited {
        retry_after: Some(Duration::from_secs(2)),
    }
}
fn rejected() -> ProviderError {
    ProviderError::Rejected { status: 400 }
}
fn stalled() -> ProviderError {
    ProviderError::Timeout("first byte")
}
fn cut() -> ProviderError {
    ProviderError::Transient("cut".into())
}

fn link(name: &str, p: Arc<Fake>, retries: u32, breaker: Arc<Breaker>) -> Link {
    Link {
        name: name.into(),
        model: None,
        provider: p,
        max_retries: retries,
        total: Duration::from_secs(300),
        breaker,
    }
}

fn breaker() -> Arc<Breaker> {
    Arc::new(Breaker::new(5, Duration::from_secs(30)))
}

async fn run(route: &Route, turn: Duration) -> (Vec<ProviderEvent>, Option<ProviderError>) {
    let history = vec![HistoryItem::user_text("hi")];
    let req = ChatRequest {
        model: "m",
        system: None,
        messages: &history,
        temperature: None,
        max_tokens: None,
        tools: &[],
        thinking_budget: None,
        tool_choice: None,
        params: None,
        deadline: Instant::now() + turn,
    };
    let mut events = Vec::new();
    let mut s = route.call(req, true);
    while let Some(e) = s.next().await {
        match e {
            Ok(e) => events.push(e),
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

fn text(events: &[ProviderEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ProviderEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_are_retried_with_backoff_then_answered() {
    let p = Fake::new(vec![Attempt::Fail(overloaded), Attempt::Fail(cut)]);
    let route = Route::new(vec![link("a", p.clone(), 2, breaker())]);
    let start = Instant::now();
    let (events, err) = run(&route, Duration::from_secs(60)).await;
    assert!(err.is_none());
    assert_eq!(text(&events), "ok");
    assert_eq!(p.calls(), 3);
    assert_eq!(p.encodes(), 1, "the retries reuse the serialised body");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "100 ms then 200 ms at least: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(500),
        "jitter adds at most half: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_when_it_fits_and_answered_when_it_does_not() {
    let p = Fake::new(vec![Attempt::Fail(limited_short)]);
    let route = Route::new(vec![link("a", p.clone(), 2, breaker())]);
    let start = Instant::now();
    let (_, err) = run(&route, Duration::from_secs(60)).await;
    assert!(err.is_none());
    assert!(start.elapsed() >= Duration::from_secs(2));

    let p = Fake::new(vec![Attempt::Fail(limited_long)]);
    let route = Route::new(vec![link("a", p.clone(), 2, breaker())]);
    let start = Instant::now();
    let (_, err) = run(&route, Duration::from_secs(60)).await;
    let err = err.expect("no sleeping past the deadline");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(600)));
    assert!(matches!(err, ProviderError::RateLimited { .. }));
    assert_eq!(p.calls(), 1);
    assert!(
        start.elapsed() < Duration::from_millis(10),
        "answered at once"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_that_retrying_would_repeat_end_the_call_at_once() {
    let a = Fake::new(vec![Attempt::Fail(rejected)]);
    let b = Fake::new(vec![]);
    let route = Route::new(vec![
        link("a", a.clone(), 3, breaker()),
        link("b", b.clone(), 3, breaker()),
    ]);
    let (_, err) = run(&route, Duration::from_secs(60)).await;
    assert!(matches!(err, Some(ProviderError::Rejected { status: 400 })));
    assert_eq!((a.calls(), b.calls()), (1, 0), "no retry, no fallback");
}

#[tokio::test(start_paused = true)]
async fn fallback_providers_are_tried_in_order() {
    let a = Fake::new(vec![Attempt::Fail(overloaded), Attempt::Fail(overloaded)]);
    let b = Fake::new(vec![Attempt::Fail(stalled)]);
    let c = Fake::new(vec![Attempt::Events(answer("from c"), None)]);
    let route = Route::new(vec![
        link("a", a.clone(), 1, breaker()),
        link("b", b.clone(), 3, breaker()),
        link("c", c.clone(), 0, breaker()),
    ]);
    let (events, err) = run(&route, Duration::from_secs(60)).await;
    assert!(err.is_none());
    assert_eq!(text(&events), "from c");
    assert_eq!(
        (a.calls(), b.calls(), c.calls()),
        (2, 1, 1),
        "a retried once; a stalled b is not asked again"
    );
    assert_eq!(
        (a.encodes(), b.encodes(), c.encodes()),
        (1, 1, 1),
        "each provider serialises its own body once"
    );

    // A Retry-After longer than the time left goes to the next provider.
    let a = Fake::new(vec![Attempt::Fail(limited_long)]);
    let b = Fake::new(vec![]);
    let route = Route::new(vec![
        link("a", a.clone(), 5, breaker()),
        link("b", b.clone(), 0, breaker()),
    ]);
    let (events, err) = run(&route, Duration::from_secs(60)).await;
    assert!(err.is_none());
    assert_eq!(text(&events), "ok");
    assert_eq!((a.calls(), b.calls()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_retried_once_text_was_forwarded_but_billed_usage_is_kept() {
    let billed = ProviderEvent::Usage(Usage {
        input_tokens: Some(50),
        ..Default::default()
    });
    let thought = ProviderEvent::Reasoning(Reasoning {
        provider: "anthropic",
        blob: "{}".into(),
    });
    let call = ProviderEvent::ToolCall(ToolCall {
        id: "1".into(),
        name: "t".into(),
        arguments: "{}".into(),
    });
    // Attempt 1 dies before any text: held events are discarded, its usage is kept.
    // Attempt 2 dies after text: the error reaches the caller.
    let p = Fake::new(vec![
        Attempt::Events(
            vec![billed.clone(), thought.clone(), call.clone()],
            Some(overloaded),
        ),
        Attempt::Events(
            vec![billed.clone(), ProviderEvent::TextDelta("Hel".into())],
            Some(cut),
        ),
    ]);
    let route = Route::new(vec![link("a", p.clone(), 5, breaker())]);
    let (events, err) = run(&route, Duration::from_secs(60)).await;
    assert!(matches!(err, Some(ProviderError::Transient(_))));
    assert_eq!(p.calls(), 2);
    assert_eq!(
        events,
        vec![
            billed.clone(),
            billed.clone(),
            ProviderEvent::TextDelta("Hel".into())
        ]
    );

    // Held events are released, in order, when the text commits the attempt.
    let p = Fake::new(vec![Attempt::Events(
        vec![
            thought.clone(),
            ProviderEvent::TextDelta("a".into()),
            call.clone(),
        ],
        None,
    )]);
    let route = Route::new(vec![link("a", p, 0, breaker())]);
    let (events, _) = run(&route, Duration::from_secs(60)).await;
    assert_eq!(
        events,
        vec![thought, ProviderEvent::TextDelta("a".into()), call]
    );
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_skips_then_lets_one_trial_through() {
    let shared = Arc::new(Breaker::new(3, Duration::from_secs(30)));
    let a = Fake::new(vec![Attempt::Fail(overloaded); 3]);
    let b = Fake::new(vec![]);
    let route = Route::new(vec![
        link("a", a.clone(), 0, shared.clone()),
        link("b", b.clone(), 0, breaker()),
    ]);
    for _ in 0..3 {
        let (_, err) = run(&route, Duration::from_secs(60)).await;
        assert!(err.is_none(), "b answers");
    }
    assert_eq!(a.calls(), 3);
    assert!(shared.is_open());
    // Open: a is skipped.
    run(&route, Duration::from_secs(60)).await;
    assert_eq!((a.calls(), b.calls()), (3, 4));

    // With no fallback, an open breaker answers 503 with the time left.
    let only_a = Route::new(vec![link("a", a.clone(), 0, shared.clone())]);
    tokio::time::advance(Duration::from_secs(10)).await;
    let (_, err) = run(&only_a, Duration::from_secs(60)).await;
    match err {
        Some(ProviderError::CircuitOpen { retry_after }) => {
            assert!(
                retry_after <= Duration::from_secs(20) && retry_after > Duration::from_secs(19)
            );
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }

    // After the cooldown one trial goes through; it fails, so the breaker reopens.
    tokio::time::advance(Duration::from_secs(21)).await;
    *a.script.lock().unwrap() = vec![Attempt::Fail(overloaded)].into();
    run(&route, Duration::from_secs(60)).await;
    assert_eq!(a.calls(), 4);
    assert!(shared.is_open());
    // The next trial succeeds: closed again, and a answers.
    tokio::time::advance(Duration::from_secs(31)).await;
    let (events, _) = run(&only_a, Duration::from_secs(60)).await;
    assert_eq!(text(&events), "ok");
    assert!(!shared.is_open());
    assert_eq!(a.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_trial_does_not_keep_the_breaker_open() {
    let b = Breaker::new(1, Duration::from_secs(10));
    b.admit().unwrap();
    b.record(false);
    assert!(b.is_open());
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(b.admit().is_ok(), "the trial call");
    assert!(b.admit().is_err(), "one trial at a time");
    // The trial's caller went away without an outcome.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(b.admit().is_ok(), "the abandoned trial expired");
    b.record(true);
    assert!(!b.is_open());
    assert!(b.admit().is_ok() && b.admit().is_ok(), "closed");
}
