//! `X-Request-Id`: kept from the request when it is `[A-Za-z0-9._-]{1,128}`,
//! generated otherwise; set on every response, and carried by the request's
//! tracing span so that every log line of the request has it. One `info` line
//! per request records its status, latency and the id of the API key that
//! authenticated it (never the key).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// When the request arrived, stored in request extensions.
#[derive(Debug, Clone, Copy)]
pub struct RequestStart(pub Instant);

/// The request id, stored in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A new request id: 128 random bits as 32 hex digits, from the thread's
/// CSPRNG (seeded from the OS, with no system call per id; cursor salts
/// still come from the OS RNG).
fn new_id() -> String {
    use rand::Rng;
    format!("{:032x}", rand::thread_rng().r#gen::<u128>())
}

/// The request id of a request that went through the middleware.
pub fn of(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(new_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(RequestStart(start));
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
        key_id = tracing::field::Empty,
    );
    if crate::telemetry::exporting() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        // A malformed or absent traceparent leaves the span a root.
        let _ = span.set_parent(crate::telemetry::remote_parent(req.headers()));
    }
    let mut res = next.call(req).instrument(span.clone()).await?;
    if let Some(key) = res.request().extensions().get::<crate::auth::KeyId>() {
        span.record("key_id", key.0.as_str());
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, value);
    }
    let limits = res
        .request()
        .extensions()
        .get::<crate::limits::RateHeaders>()
        .map(crate::limits::RateHeaders::headers);
    for (name, value) in limits.into_iter().flatten() {
        res.headers_mut().insert(name, value);
    }
    let status = res.status().as_u16();
    let elapsed = start.elapsed().as_secs_f64();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    crate::observe::request(route, method.as_str(), status, elapsed);
    let latency_ms = elapsed * 1000.0;
    span.in_scope(|| tracing::info!(status, latency_ms, "request finished"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::acceptable;

    #[test]
    fn request_ids_are_checked() {
        assert!(acceptable("abc-123_x.y"));
        assert!(acceptable(&"a".repeat(128)));
        assert!(!acceptable(&"a".repeat(129)));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable("a\nb"));
        assert!(!acceptable("é"));
    }
}
