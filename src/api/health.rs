//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{AppState, Lifecycle};

/// 200 while the process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 503 only before start-up completes and while draining; never because an
/// optional dependency is down. The store's health is reported in the body only.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (kind, up) = state.store.health().await;
    let store = json!({"kind": kind, "up": up});
    let (mut res, status) = match state.lifecycle() {
        Lifecycle::Ready => (HttpResponse::Ok(), "ready"),
        Lifecycle::Starting => (HttpResponse::ServiceUnavailable(), "starting"),
        Lifecycle::Draining => (HttpResponse::ServiceUnavailable(), "draining"),
    };
    res.json(json!({"status": status, "store": store}))
}

/// Prometheus metrics (text exposition format).
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (_, up) = state.store.health().await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::observe::render(&state, up))
}
