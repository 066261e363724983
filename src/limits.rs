//! Rate limits and concurrent streams (`[rate_limits]`): per tenant (project
//! or organisation) and per caller (API key, or token subject), counted in
//! the store ([`crate::store::rate`]) so that replicas sharing a Redis store
//! enforce one limit together.
//!
//! A request is admitted once it is authenticated: it takes one unit from
//! its tenant's and its caller's request buckets, and a turn also needs at
//! least one token left in their token buckets. The tokens a turn really
//! uses are charged as each model answer arrives ([`Meter`]), so one large
//! turn can take a bucket into debt and the next waits until it is paid
//! back. A streamed turn holds one of its tenant's stream slots until the
//! stream ends.
//!
//! The store failing never fails a request: limits fail open, with a
//! warning (at most one every ten seconds) and a metric. A check waits at
//! most 250 ms for the store, and after a failure checks skip the store for
//! five seconds, so an unreachable store adds no latency to requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::Principal;
use crate::config::RateLimitSettings;
use crate::error::{ApiError, ErrorCode};
use crate::runtime::RunEvent;
use crate::store::{Bucket, Store, StoreError, Tokens};

/// The longest a limit check waits for the store before letting the request through.
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed check, how long checks skip the store (and let requests
/// through at once), so that an unreachable store costs each request nothing.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(5);

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The store as the limits use it: every call bounded by
/// [`CHECK_TIMEOUT`], and skipped for [`SKIP_AFTER_FAILURE`] after one failed.
#[derive(Debug)]
pub struct Counters {
    store: Arc<dyn Store>,
    /// Until when calls skip the store (ms since the epoch).
    skip_until_ms: AtomicU64,
}

impl Counters {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            store,
            skip_until_ms: AtomicU64::new(0),
        })
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if epoch_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable(
                "skipped after a recent failure".into(),
            ));
        }
        let result = match tokio::time::timeout(CHECK_TIMEOUT, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable("the limit check timed out".into())),
        };
        if result.is_err() {
            self.skip_until_ms.store(
                epoch_ms() + SKIP_AFTER_FAILURE.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
        result
    }

    async fn count_request(&self, key: &str, per_minute: u64) -> Result<Bucket, StoreError> {
        self.bounded(self.store.count_request(key, per_minute))
            .await
    }

    async fn meter_tokens(
        &self,
        key: &str,
        per_minute: u64,
        how: Tokens,
    ) -> Result<Bucket, StoreError> {
        self.bounded(self.store.meter_tokens(key, per_minute, how))
            .await
    }

    async fn open_slot(
        &self,
        key: &str,
        id: &str,
        max: u64,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.bounded(self.store.open_slot(key, id, max, lease))
            .await
    }

    async fn close_slot(&self, key: &str, id: &str) {
        if let Err(e) = self.bounded(self.store.close_slot(key, id)).await {
            store_failed(&e);
        }
    }
}

/// What a request is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Anything that runs no model (reading sessions, polling executions).
    Read,
    /// A turn; a streamed one holds a stream slot.
    Turn { streaming: bool },
}

/// A token bucket a turn's model usage is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    pub key: String,
    pub per_minute: u64,
}

/// Charges the model tokens of a turn to its buckets as they are used.
#[derive(Clone)]
pub struct Meter {
    counters: Arc<Counters>,
    buckets: Vec<TokenBucket>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("buckets", &self.buckets)
            .finish()
    }
}

impl Meter {
    /// A meter for `buckets`; `None` when there are none.
    pub fn new(counters: Arc<Counters>, buckets: Vec<TokenBucket>) -> Option<Self> {
        (!buckets.is_empty()).then_some(Self { counters, buckets })
    }

    pub fn buckets(&self) -> &[TokenBucket] {
        &self.buckets
    }

    /// Charge `tokens` to every bucket, in the background (a model answer
    /// never waits for the store).
    pub fn charge(&self, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let (counters, buckets) = (self.counters.clone(), self.buckets.clone());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            for b in buckets {
                if let Err(e) = counters
                    .meter_tokens(&b.key, b.per_minute, Tokens::Charge(tokens))
                    .await
                {
                    store_failed(&e);
                }
            }
        });
    }
}

/// One open stream slot; closed when dropped.
#[derive(Debug)]
pub struct Slot {
    counters: Arc<Counters>,
    key: String,
    id: String,
}

impl Slot {
    /// Give the slot back now (before the stream's last event, so that a
    /// client starting its next stream on seeing it is not refused).
    async fn close(mut self) {
        let (key, id) = (std::mem::take(&mut self.key), std::mem::take(&mut self.id));
        self.counters.close_slot(&key, &id).await;
    }
}

impl Drop for Slot {
    /// A slot not closed yet (the stream was abandoned) is closed in the background.
    fn drop(&mut self) {
        if self.id.is_empty() {
            return;
        }
        let (counters, key, id) = (
            self.counters.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.id),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { counters.close_slot(&key, &id).await });
        }
    }
}

/// `events`, holding `slot` until the turn's last event (`Done` or
/// `Error`), or until the stream is dropped if it is abandoned first.
pub fn holding(
    events: futures_util::stream::BoxStream<'static, RunEvent>,
    slot: Option<Slot>,
) -> futures_util::stream::BoxStream<'static, RunEvent> {
    let Some(slot) = slot else {
        return events;
    };
    Box::pin(async_stream::stream! {
        use futures_util::StreamExt;
        let mut slot = Some(slot);
        let mut events = events;
        while let Some(event) = events.next().await {
            if matches!(event, RunEvent::Done(_) | RunEvent::Error(_))
                && let Some(slot) = slot.take()
            {
                slot.close().await;
            }
            yield event;
        }
    })
}

/// What an admitted request carries on.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Charges the turn's tokens (set for turns with token limits).
    pub meter: Option<Meter>,
    /// The stream slot, to hold until the stream ends.
    pub slot: Option<Slot>,
}

/// The rate-limit headers of a response, kept in the request's extensions
/// and written by the request middleware (on errors too).
#[derive(Debug, Clone, Default)]
pub struct RateHeaders {
    requests: Option<(u64, Bucket)>,
    tokens: Option<(u64, Bucket)>,
}

impl RateHeaders {
    /// Keep the tighter of two answers for the same kind of limit.
    fn keep(slot: &mut Option<(u64, Bucket)>, limit: u64, bucket: Bucket) {
        let tighter = slot
            .as_ref()
            .is_none_or(|(_, b)| bucket.remaining < b.remaining);
        if tighter {
            *slot = Some((limit, bucket));
        }
    }

    /// The `x-ratelimit-*` headers.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (kind, entry) in [("requests", &self.requests), ("tokens", &self.tokens)] {
            let Some((limit, bucket)) = entry else {
                continue;
            };
            for (name, value) in [
                ("limit", limit.to_string()),
                ("remaining", bucket.remaining.to_string()),
                ("reset", duration_text(bucket.reset)),
            ] {
                let name = format!("x-ratelimit-{name}-{kind}");
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    out.push((n, v));
                }
            }
        }
        out
    }
}

/// A duration as OpenAI's rate-limit headers spell it: `250ms`, `7s`, `6m0s`.
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

/// The limits that apply to one principal (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    tenant_requests: u64,
    tenant_tokens: u64,
    tenant_streams: u64,
    caller_requests: u64,
    caller_tokens: u64,
}

fn applied(settings: &RateLimitSettings, p: &Principal) -> Applied {
    let own = settings.tenants.get(&p.tenant);
    let caller = p.caller.as_ref();
    let has_caller = u64::from(caller.is_some());
    Applied {
        tenant_requests: own
            .and_then(|t| t.requests_per_minute)
            .unwrap_or(settings.requests_per_minute),
        tenant_tokens: own
            .and_then(|t| t.tokens_per_minute)
            .unwrap_or(settings.tokens_per_minute),
        tenant_streams: own
            .and_then(|t| t.concurrent_streams)
            .unwrap_or(settings.concurrent_streams),
        caller_requests: caller
            .and_then(|c| c.requests_per_minute)
            .unwrap_or(settings.key_requests_per_minute)
            * has_caller,
        caller_tokens: caller
            .and_then(|c| c.tokens_per_minute)
            .unwrap_or(settings.key_tokens_per_minute)
            * has_caller,
    }
}

/// When the last store failure was logged (seconds since the epoch).
static WARNED_AT: AtomicU64 = AtomicU64::new(0);

/// A limit could not be checked: count it, warn now and then, let it pass.
fn store_failed(e: &StoreError) {
    crate::observe::rate_limit_store_error();
    let now = epoch_ms() / 1000;
    let last = WARNED_AT.load(Ordering::Relaxed);
    if now >= last + 10
        && WARNED_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %e, "rate limits cannot reach the store: letting requests through");
    }
}

fn refused(scope: &'static str, limit: &'static str, bucket: &Bucket) -> ApiError {
    crate::observe::rate_limited(scope, limit);
    let whose = if scope == "tenant" {
        "this project or organisation"
    } else {
        "this API key"
    };
    let what = match limit {
        "requests" => "requests per minute",
        "tokens" => "model tokens per minute",
        _ => "streams open at once",
    };
    let secs = bucket.retry_after.as_secs() + u64::from(bucket.retry_after.subsec_nanos() > 0);
    let mut e = ApiError::new(
        ErrorCode::RateLimited,
        format!("the limit of {what} for {whose} is reached; retry later"),
    );
    e.retry_after = Some(secs.max(1));
    e
}

/// The store keys of a principal's buckets.
fn key(kind: &str, scope: char, id: &str) -> String {
    format!("{scope}:{kind}:{id}")
}

/// Check `principal`'s limits for `work`. Refused: 429 `rate_limited` with
/// `Retry-After`. The `x-ratelimit-*` headers are recorded on `req`.
pub async fn admit(
    app: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    work: Work,
) -> Result<Admitted, ApiError> {
    let limits = applied(&app.catalog().rate_limits, principal);
    let store = &app.counters;
    let tenant = principal.tenant.as_str();
    let caller = principal.caller.as_ref().map_or("", |c| c.id.as_str());
    let mut headers = RateHeaders::default();
    let result = async {
        for (scope, id, per_minute) in [
            ("caller", caller, limits.caller_requests),
            ("tenant", tenant, limits.tenant_requests),
        ] {
            if per_minute == 0 {
                continue;
            }
            let kind_key = key("r", scope_char(scope), id);
            match store.count_request(&kind_key, per_minute).await {
                Ok(b) if !b.allowed => {
                    headers.requests = Some((per_minute, b));
                    return Err(refused(scope, "requests", &b));
                }
                Ok(b) => RateHeaders::keep(&mut headers.requests, per_minute, b),
                Err(e) => store_failed(&e),
            }
        }
        let Work::Turn { streaming } = work else {
            return Ok(Admitted::default());
        };
        let mut buckets = Vec::new();
        for (scope, id, per_minute) in [
            ("caller", caller, limits.caller_tokens),
            ("tenant", tenant, limits.tenant_tokens),
        ] {
            if per_minute == 0 {
                continue;
            }
            let bucket = key("t", scope_char(scope), id);
            match store.meter_tokens(&bucket, per_minute, Tokens::Peek).await {
                Ok(b) if !b.allowed => {
                    headers.tokens = Some((per_minute, b));
                    return Err(refused(scope, "tokens", &b));
                }
                Ok(b) => RateHeaders::keep(&mut headers.tokens, per_minute, b),
                Err(e) => store_failed(&e),
            }
            buckets.push(TokenBucket {
                key: bucket,
                per_minute,
            });
        }
        let slot = if streaming && limits.tenant_streams > 0 {
            open_slot(app, tenant, limits.tenant_streams).await?
        } else {
            None
        };
        Ok(Admitted {
            meter: Meter::new(store.clone(), buckets),
            slot,
        })
    }
    .await;
    req.extensions_mut().insert(headers);
    result
}

fn scope_char(scope: &str) -> char {
    if scope == "tenant" { 't' } else { 'c' }
}

/// Open one of `tenant`'s stream slots, leased for the longest turn any
/// agent may run (plus a minute) in case this replica dies holding it.
async fn open_slot(app: &AppState, tenant: &str, max: u64) -> Result<Option<Slot>, ApiError> {
    let lease = app
        .catalog()
        .agents
        .longest_turn()
        .saturating_add(Duration::from_secs(60));
    let key = key("s", 't', tenant);
    let id = uuid::Uuid::new_v4().simple().to_string();
    match app.counters.open_slot(&key, &id, max, lease).await {
        Ok(true) => Ok(Some(Slot {
            counters: app.counters.clone(),
            key,
            id,
        })),
        Ok(false) => Err(refused(
            "tenant",
            "streams",
            &Bucket {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_secs(1),
                reset: Duration::ZERO,
            },
        )),
        Err(e) => {
            store_failed(&e);
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Caller;
    use crate::config::TenantLimitSettings;

    #[test]
    fn durations_are_spelled_like_openai() {
        assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_text(Duration::from_millis(6500)), "7s");
        assert_eq!(duration_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(duration_text(Duration::ZERO), "0ms");
    }

    #[test]
    fn tenant_overrides_and_key_limits_apply_to_their_own_only() {
        let mut settings = RateLimitSettings {
            requests_per_minute: 100,
            tokens_per_minute: 1000,
            key_requests_per_minute: 10,
            ..Default::default()
        };
        settings.tenants.insert(
            "big".into(),
            TenantLimitSettings {
                requests_per_minute: Some(500),
                ..Default::default()
            },
        );
        let anonymous = Principal {
            tenant: "big".into(),
            subject: "anonymous".into(),
            key_id: None,
            caller: None,
        };
        let a = applied(&settings, &anonymous);
        assert_eq!((a.tenant_requests, a.tenant_tokens), (500, 1000));
        assert_eq!((a.caller_requests, a.caller_tokens), (0, 0));
        let keyed = Principal {
            tenant: "small".into(),
            caller: Some(Caller {
                id: "k:one".into(),
                requests_per_minute: Some(3),
                tokens_per_minute: None,
            }),
            ..anonymous
        };
        let a = applied(&settings, &keyed);
        assert_eq!((a.tenant_requests, a.caller_requests), (100, 3));
    }

    #[test]
    fn the_tighter_answer_makes_the_headers() {
        let b = |remaining| Bucket {
            allowed: true,
            remaining,
            retry_after: Duration::ZERO,
            reset: Duration::from_secs(2),
        };
        let mut h = RateHeaders::default();
        RateHeaders::keep(&mut h.requests, 10, b(9));
        RateHeaders::keep(&mut h.requests, 100, b(50));
        let headers = h.headers();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.as_str() == n)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("x-ratelimit-limit-requests").as_deref(), Some("10"));
        assert_eq!(get("x-ratelimit-remaining-requests").as_deref(), Some("9"));
        assert_eq!(get("x-ratelimit-reset-requests").as_deref(), Some("2s"));
        assert_eq!(get("x-ratelimit-limit-tokens"), None);
    }
}
