//! Metrics in Prometheus format (`GET /metrics`), through the `metrics`
//! facade and `metrics-exporter-prometheus`. One process-wide recorder; the
//! functions below are the only places metric names are spelled. Labels are
//! bounded sets (route patterns, agent and provider names from config, tool
//! names, reasons): never a raw path, a tenant, a key or a token.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::Usage;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Install the recorder (once per process; later calls reuse it). `None` if
/// another recorder was installed first (then nothing is exported).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// The exposition text, after refreshing the gauges read at scrape time.
pub fn render(state: &crate::app::AppState, store_up: bool) -> String {
    let Some(handle) = install() else {
        return String::new();
    };
    for (kid, opened) in state.codec.keyring().open_counts() {
        counter!("agentgate_cursor_opens_total", "kid" => kid.to_owned()).absolute(opened);
    }
    gauge!("agentgate_store_up").set(if store_up { 1.0 } else { 0.0 });
    handle.run_upkeep();
    handle.render()
}

/// One HTTP request: by route pattern, method (the standard ones, else
/// `other`: clients choose methods) and status.
pub fn request(route: String, method: &str, status: u16, seconds: f64) {
    const METHODS: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    let method = METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other");
    counter!("agentgate_http_requests_total", "route" => route.clone(), "method" => method, "status" => status.to_string()).increment(1);
    histogram!("agentgate_http_request_duration_seconds", "route" => route).record(seconds);
}

/// A request refused by a rate limit: `scope` is `tenant` or `caller`,
/// `limit` is `requests`, `tokens` or `streams`.
pub fn rate_limited(scope: &'static str, limit: &'static str) {
    counter!("agentgate_rate_limit_rejections_total", "scope" => scope, "limit" => limit)
        .increment(1);
}

/// A rate limit that could not be checked (the store failed; it let the
/// request through).
pub fn rate_limit_store_error() {
    counter!("agentgate_rate_limit_store_errors_total").increment(1);
}

/// Tokens billed by one provider answer for an agent.
pub fn tokens(agent: &str, provider: &str, usage: &Usage) {
    for (direction, n) in [
        ("in", usage.input_tokens),
        ("out", usage.output_tokens),
        ("cache_read", usage.cache_read_tokens),
        ("cache_write", usage.cache_write_tokens),
    ] {
        if let Some(n) = n {
            counter!("agentgate_model_tokens_total", "agent" => agent.to_owned(), "provider" => provider.to_owned(), "direction" => direction).increment(n);
        }
    }
}

/// Time from the start of a streamed request to its first text delta.
pub fn time_to_first_token(seconds: f64) {
    histogram!("agentgate_time_to_first_token_seconds").record(seconds);
}

/// A failed upstream attempt, by provider and error class.
pub fn upstream_error(provider: &str, class: &'static str) {
    counter!("agentgate_upstream_errors_total", "provider" => provider.to_owned(), "class" => class).increment(1);
}

/// An upstream attempt retried.
pub fn retry(provider: &str) {
    counter!("agentgate_upstream_retries_total", "provider" => provider.to_owned()).increment(1);
}

/// Whether a provider's circuit breaker is open (1) or not (0).
pub fn breaker(provider: &str, open: bool) {
    gauge!("agentgate_breaker_open", "provider" => provider.to_owned()).set(if open {
        1.0
    } else {
        0.0
    });
}

/// A server tool run, by tool and outcome (`ok` or `error`).
pub fn tool_call(tool: &str, ok: bool) {
    counter!("agentgate_tool_calls_total", "tool" => tool.to_owned(), "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

/// A cursor refused, by reason.
pub fn cursor_failure(reason: &'static str) {
    counter!("agentgate_cursor_failures_total", "reason" => reason).increment(1);
}

/// Async jobs waiting for a worker (read at scrape time).
pub fn queue_depth(depth: u64) {
    gauge!("agentgate_async_queue_depth").set(depth as f64);
}
