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

/// How often buffered log lines are written out.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// A buffer this full is written out at once, by the thread that filled it.
const FLUSH_AT_BYTES: usize = 256 * 1024;

/// Log lines on their way to stderr. A line is appended to a shared buffer
/// (a copy under a lock) and a background thread writes the buffer out
/// every 20 ms, so the request path makes no `write(2)` per line, and a
/// busy replica writes its log in a few large writes a second instead of
/// one per request. A full buffer (256 KiB) is written out at once by the
/// thread that filled it, which bounds the memory and, under a flood,
/// slows the writers rather than dropping lines. (tracing-appender's
/// non-blocking writer writes each line with its own `write(2)` from its
/// worker thread, and drops lines when its queue is full.) Written out on
/// exit and on panic; a process killed outright (SIGKILL, an abort) loses
/// at most the last 20 ms of lines. If the writing thread cannot be
/// started, each line is written at once.
#[derive(Clone, Default)]
struct LineBuffer {
    shared: std::sync::Arc<Lines>,
}

#[derive(Default)]
struct Lines {
    pending: std::sync::Mutex<Vec<u8>>,
    /// Held while writing, so that buffers reach stderr in order.
    writing: std::sync::Mutex<()>,
    /// Set when no thread writes the buffer out: every line is written at once.
    direct: std::sync::atomic::AtomicBool,
}

impl Lines {
    fn flush(&self) {
        let _order = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.write_out();
    }

    /// From the panic hook: never wait (the panicking thread may hold the
    /// lock, or stderr); whatever is not written now is lost with the process.
    fn flush_if_free(&self) {
        use std::io::Write;
        let Ok(_order) = self.writing.try_lock() else {
            return;
        };
        let Ok(mut pending) = self.pending.try_lock() else {
            return;
        };
        let data = std::mem::take(&mut *pending);
        drop(pending);
        let _ = std::io::stderr().lock().write_all(&data);
    }

    fn write_out(&self) {
        use std::io::Write;
        let data = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if !data.is_empty() {
            let _ = std::io::stderr().lock().write_all(&data);
        }
    }
}

impl std::io::Write for LineBuffer {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            pending.extend_from_slice(line);
            pending.len() >= FLUSH_AT_BYTES
                || self
                    .shared
                    .direct
                    .load(std::sync::atomic::Ordering::Relaxed)
        };
        if full {
            self.shared.flush();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineBuffer {
    type Writer = LineBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

static LINES: std::sync::OnceLock<LineBuffer> = std::sync::OnceLock::new();

/// The process's line buffer, with its flushing thread and panic hook.
fn line_buffer() -> LineBuffer {
    LINES
        .get_or_init(|| {
            let buffer = LineBuffer::default();
            let shared = buffer.shared.clone();
            let writer = shared.clone();
            let started = std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(FLUSH_EVERY);
                        writer.flush();
                    }
                });
            if started.is_err() {
                shared
                    .direct
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                shared.flush_if_free();
                previous(info);
            }));
            buffer
        })
        .clone()
}

/// Write out the log lines still buffered.
pub fn flush_logs() {
    if let Some(lines) = LINES.get() {
        lines.shared.flush();
    }
}

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
    /// Send what is buffered (bounded by the exporter's timeout), write
    /// out the last log lines, and stop.
    pub fn shutdown(self) {
        if let Some(Err(e)) = self.traces.map(|p| p.shutdown()) {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
        flush_logs();
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
    let logs = tracing_subscriber::fmt::layer().with_writer(line_buffer());
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
