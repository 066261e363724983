//! HTTP only: routing, request ids, body decoding, health, and one facade per
//! public API shape. Facades parse wire types at the edge and call the engine.

pub mod body;
pub mod cognite;
pub mod health;
pub mod quant;
pub mod report;
pub mod request_id;
pub mod sse;

use actix_web::{HttpRequest, HttpResponse, web};

pub use crate::app::{AppState, Lifecycle};
use crate::error::{ApiError, ErrorCode};

/// An error response with `body` (the facade's rendering) and `Retry-After` when set.
pub fn error_response(err: &ApiError, body: String) -> HttpResponse {
    let mut res = HttpResponse::build(err.code.status());
    if let Some(secs) = err.retry_after {
        res.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
    }
    res.content_type("application/json").body(body)
}

/// Register every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/api/v1/projects/{project}/ai/agents/chat")
            .route(web::post().to(cognite::handlers::chat_in_project))
            .default_service(web::to(method_not_allowed)),
    )
    .configure(quant::routes)
    .service(
        web::resource("/ai/agents/chat")
            .route(web::post().to(cognite::handlers::chat_default_project))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    cognite::error::render(
        &ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here", req.method()),
        ),
        &request_id::of(&req),
    )
}

/// Fallback for unknown paths.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    cognite::error::render(
        &ApiError::new(
            ErrorCode::NotFound,
            format!("no route for {} {}", req.method(), req.path()),
        ),
        &request_id::of(&req),
    )
}
