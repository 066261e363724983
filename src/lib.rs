//! agentgate: a stateless, cursor-based AI agent gateway.
//!
//! The data path (docs/architecture.md): `api` parses a request and resolves
//! its `Principal`; `cursor` opens the conversation state; `runtime` runs the
//! turn against an `llm` provider; `cursor` seals the new state; `api` renders
//! the response in the caller's API shape.

pub mod agent;
pub mod api;
pub mod app;
pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
pub mod cursor;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod jobs;
pub mod limits;
pub mod llm;
pub mod observe;
pub mod ops;
pub mod runtime;
pub mod sessions;
pub mod startup;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod testkit;
pub mod tools;

/// Install the process-wide TLS crypto provider (ring) that every HTTP client
/// uses: the upstream providers, HTTP tools and MCP servers. Idempotent; called
/// by [`startup::Application::build`] before any client is made.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
