//! Liveness, readiness, metrics and the admin reload.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, Lifecycle};

/// `/healthz`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `/readyz`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` (200), `starting` or `draining` (503).
    #[schema(example = "ready")]
    pub status: &'static str,
    pub store: StoreHealth,
}

/// The store as `/readyz` reports it (its health never fails readiness).
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreHealth {
    /// `memory` or `redis`.
    pub kind: &'static str,
    pub up: bool,
}

/// `POST /admin/reload`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    /// Always `reloaded`.
    pub status: &'static str,
    /// How many agents the new configuration has.
    pub agents: usize,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// 503 only before start-up completes and while draining; never because an
/// optional dependency is down. The store's health is reported in the body only.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic", body = Readiness),
        (status = 503, description = "Starting or draining", body = Readiness),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (kind, up) = state.store.health().await;
    let (mut res, status) = match state.lifecycle() {
        Lifecycle::Ready => (HttpResponse::Ok(), "ready"),
        Lifecycle::Starting => (HttpResponse::ServiceUnavailable(), "starting"),
        Lifecycle::Draining => (HttpResponse::ServiceUnavailable(), "draining"),
    };
    res.json(Readiness {
        status,
        store: StoreHealth { kind, up },
    })
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format (docs/operations.md lists the metrics)",
        body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")))]
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
#[utoipa::path(post, path = "/admin/reload", tag = "operations",
    security(("bearer" = [])),
    responses((status = 200, description = "The configuration was reloaded", body = Reloaded)))]
pub async fn reload(req: actix_web::HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let request_id = super::request_id::of(&req);
    let key_id = match state.catalog().auth.admin(&req) {
        Ok(id) => id,
        Err(e) => return super::cognite::error::render(&e, &request_id),
    };
    match state.reload() {
        Ok(agents) => {
            tracing::info!(key_id, agents, "configuration reloaded (admin)");
            HttpResponse::Ok().json(Reloaded {
                status: "reloaded",
                agents,
            })
        }
        Err(e) => {
            tracing::error!(key_id, error = %e, "configuration reload failed; the current configuration stays");
            let err =
                crate::error::ApiError::invalid(format!("the configuration was not reloaded: {e}"));
            super::cognite::error::render(&err, &request_id)
        }
    }
}
