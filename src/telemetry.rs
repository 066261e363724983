//! Logging: JSON (one object per line, with the request span's fields) or
//! pretty text. `RUST_LOG` overrides the configured level.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the same spans (the
//! request, the handler, the turn) are also exported over OTLP/HTTP
//! (protobuf) by a batch exporter on its own thread, configured by the
//! standard `OTEL_*` variables (`OTEL_SERVICE_NAME`, default `agentgate`;
//! `OTEL_EXPORTER_OTLP_HEADERS`; `OTEL_BSP_*`), and a request's W3C
//! `traceparent` header makes its span a child of the caller's. Without the
//! variable no exporter exists and spans cost what the logs already pay.
//!
//! actix-http logs a client's malformed HTTP (a bad request line, a
//! connection reset mid-request) at ERROR under `actix_http::h1`: anyone could
//! write ERROR lines at will. Those clients already get a 400 or a closed
//! connection, so that target is silenced unless the level names it.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};

/// Whether spans are exported (a request then looks for a `traceparent`).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether OpenTelemetry export is on.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// What [`init`] started; [`Telemetry::shutdown`] flushes the spans not yet sent.
#[must_use]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Send what is buffered (bounded by the exporter's timeout) and stop.
    pub fn shutdown(self) {
        if let Some(Err(e)) = self.traces.map(|p| p.shutdown()) {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

/// The OTLP exporter, if `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces one) is set.
fn tracer_provider() -> Option<SdkTracerProvider> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return None;
    }
    // The exporter's HTTP client is rustls-based like the others.
    crate::install_crypto_provider();
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OpenTelemetry export is off: the OTLP exporter cannot be built: {e}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("agentgate");
    }
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}

/// The caller's trace context from a request's `traceparent` (and `tracestate`).
pub fn remote_parent(headers: &actix_web::http::header::HeaderMap) -> opentelemetry::Context {
    struct Headers<'a>(&'a actix_web::http::header::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    use opentelemetry::propagation::TextMapPropagator;
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Headers(headers))
}

/// Where actix-http logs clients' protocol errors.
const CLIENT_NOISE: &str = "actix_http::h1";

/// The filter for `level` (a `RUST_LOG`-style directive list).
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    let mut filter = EnvFilter::builder()
        .with_regex(false)
        .parse(level)
        .map_err(|e| e.to_string())?;
    if !level.contains("actix_http") {
        let quiet = format!("{CLIENT_NOISE}=off")
            .parse()
            .map_err(|e: tracing_subscriber::filter::ParseError| e.to_string())?;
        filter = filter.add_directive(quiet);
    }
    Ok(filter)
}

/// Install the global subscriber (and the span exporter when configured);
/// a second call is a no-op.
pub fn init(settings: &LogSettings) -> Telemetry {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let log_filter = from_env
        .as_deref()
        .and_then(|v| filter(v).ok())
        .or_else(|| filter(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match settings.format {
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => logs.boxed(),
    };
    let traces = tracer_provider();
    // Spans are exported at `info` whatever the log level: `[log] level =
    // "warn"` quiets the logs, not the traces.
    let otel = traces.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("agentgate"))
            .with_tracked_inactivity(false)
            .with_filter(filter("info").unwrap_or_else(|_| EnvFilter::new("info")))
    });
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(log_filter))
        .with(otel)
        .try_init()
        .is_ok();
    if installed && traces.is_some() {
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("exporting spans over OTLP");
    }
    Telemetry {
        traces: traces.filter(|_| installed),
    }
}
