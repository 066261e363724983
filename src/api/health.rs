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
    if let Ok(depth) = state.store.queue_depth().await {
        crate::observe::queue_depth(depth);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::observe::render(&state, up))
}

/// `POST /admin/reload`: what SIGHUP does, for an admin API key. 200 with
/// the number of agents, or 400 naming the key the file gets wrong (the
/// current configuration stays).
pub async fn reload(req: actix_web::HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let request_id = super::request_id::of(&req);
    let key_id = match state.catalog().auth.admin(&req) {
        Ok(id) => id,
        Err(e) => return super::cognite::error::render(&e, &request_id),
    };
    match state.reload() {
        Ok(agents) => {
            tracing::info!(key_id, agents, "configuration reloaded (admin)");
            HttpResponse::Ok().json(json!({"status": "reloaded", "agents": agents}))
        }
        Err(e) => {
            tracing::error!(key_id, error = %e, "configuration reload failed; the current configuration stays");
            let err =
                crate::error::ApiError::invalid(format!("the configuration was not reloaded: {e}"));
            super::cognite::error::render(&err, &request_id)
        }
    }
}
