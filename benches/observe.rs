//! What observability and rate limits cost a request, in process: the
//! metrics the request middleware records, its JSON log line (written to a
//! sink, with the request span, as `[log] format = "json"` does), and a rate
//! limit check against the memory store. docs/benchmarks.md records the
//! figures next to the per-request CPU budget.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

fn metrics(c: &mut Criterion) {
    agentgate::observe::install();
    c.bench_function("observe/request_metrics", |b| {
        b.iter(|| {
            agentgate::observe::request(
                black_box("/api/v1/projects/{project}/ai/agents/chat").to_owned(),
                black_box("POST"),
                black_box(200),
                black_box(0.000_25),
            );
        })
    });
    let usage = agentgate::domain::Usage {
        input_tokens: Some(11),
        output_tokens: Some(3),
        ..Default::default()
    };
    c.bench_function("observe/model_tokens", |b| {
        b.iter(|| agentgate::observe::tokens(black_box("support"), black_box("openai"), &usage))
    });
}

fn log_line(c: &mut Criterion) {
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        c.bench_function("observe/request_span_and_log_line", |b| {
            b.iter(|| {
                let span = tracing::info_span!(
                    "request",
                    request_id = %black_box("0af7651916cd43dd8448eb211c80319c"),
                    method = %"POST",
                    path = %black_box("/api/v1/projects/demo/ai/agents/chat"),
                    key_id = tracing::field::Empty,
                );
                span.in_scope(|| {
                    tracing::info!(status = 200u16, latency_ms = 0.25f64, "request finished")
                });
            })
        });
    });
}

fn rate_limits(c: &mut Criterion) {
    use agentgate::store::rate::{Local, Tokens};
    let local = Local::default();
    c.bench_function("limits/local_request_check", |b| {
        // A limit no benchmark reaches: every check is allowed.
        b.iter(|| local.request(black_box("t:r:demo"), 1_000_000_000))
    });
    c.bench_function("limits/local_token_peek", |b| {
        b.iter(|| local.tokens(black_box("t:t:demo"), 1_000_000_000, Tokens::Peek))
    });
}

criterion_group!(benches, metrics, log_line, rate_limits);
criterion_main!(benches);
