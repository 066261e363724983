//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{AppState, Lifecycle};

/// 200 while the process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 503 only before start-up completes and while draining; never because an
/// optional dependency is down.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.lifecycle() {
        Lifecycle::Ready => HttpResponse::Ok().json(json!({"status": "ready"})),
        Lifecycle::Starting => {
            HttpResponse::ServiceUnavailable().json(json!({"status": "starting"}))
        }
        Lifecycle::Draining => {
            HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}))
        }
    }
}
