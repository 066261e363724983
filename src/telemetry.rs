//! Logging: JSON (one object per line, with the request span's fields) or
//! pretty text. `RUST_LOG` overrides the configured level.
//!
//! actix-http logs a client's malformed HTTP (a bad request line, a
//! connection reset mid-request) at ERROR under `actix_http::h1`: anyone could
//! write ERROR lines at will. Those clients already get a 400 or a closed
//! connection, so that target is silenced unless the level names it.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

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

/// Install the global subscriber; a second call is a no-op.
pub fn init(settings: &LogSettings) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = from_env
        .as_deref()
        .and_then(|v| filter(v).ok())
        .or_else(|| filter(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
