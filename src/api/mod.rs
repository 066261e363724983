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
    if err.code == ErrorCode::Unauthorized {
        res.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
    }
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
            .default_service(web::to(method_not_allowed::<Cognite>)),
    )
    .service(
        web::resource("/admin/reload")
            .route(web::post().to(health::reload))
            .default_service(web::to(method_not_allowed::<Cognite>)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(health::metrics))
            .default_service(web::to(method_not_allowed::<Cognite>)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .default_service(web::to(method_not_allowed::<Cognite>)),
    )
    .service(
        web::resource("/api/v1/projects/{project}/ai/agents/chat")
            .route(web::post().to(cognite::handlers::chat_in_project))
            .default_service(web::to(method_not_allowed::<Cognite>)),
    )
    .configure(quant::routes)
    .service(
        web::resource("/ai/agents/chat")
            .route(web::post().to(cognite::handlers::chat_default_project))
            .default_service(web::to(method_not_allowed::<Cognite>)),
    );
}

/// An API shape's error rendering: the body format its clients parse.
pub trait ErrorFormat {
    fn render(err: &ApiError, request_id: &str) -> HttpResponse;
}

/// The Cognite error format (also used for the health routes and unknown paths).
pub struct Cognite;

impl ErrorFormat for Cognite {
    fn render(err: &ApiError, request_id: &str) -> HttpResponse {
        cognite::error::render(err, request_id)
    }
}

/// The Quant error format.
pub struct Quant;

impl ErrorFormat for Quant {
    fn render(err: &ApiError, request_id: &str) -> HttpResponse {
        quant::error::render(err, request_id)
    }
}

/// 405 for a known path with another method, in format `F`: the one
/// handler every resource of both facades falls back to.
pub async fn method_not_allowed<F: ErrorFormat>(req: HttpRequest) -> HttpResponse {
    F::render(
        &ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here", req.method()),
        ),
        &request_id::of(&req),
    )
}

/// 404 for an unknown path, in format `F`.
pub async fn not_found<F: ErrorFormat>(req: HttpRequest) -> HttpResponse {
    F::render(
        &ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no route for {} {}",
                req.method(),
                crate::error::prefix(req.path(), 200)
            ),
        ),
        &request_id::of(&req),
    )
}
