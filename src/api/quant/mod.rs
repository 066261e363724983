//! The Quant-style AI API: agent chat with server-side sessions, the sessions
//! API and async executions, under `/api/v3/organizations/{org}/ai` (also the
//! `organisations` spelling).

pub mod chat;
pub mod error;
pub mod executions;
pub mod sessions;
pub mod wire;

use actix_web::web;

use crate::api::{Quant, method_not_allowed, not_found, request_id};
use crate::error::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v3/{spelling:organi[sz]ations}/{org}/ai")
            .app_data(web::QueryConfig::default().error_handler(|err, req| {
                let error = ApiError::invalid(format!(
                    "the query string is not valid for this API: {}",
                    crate::error::prefix(&err.to_string(), 300)
                ));
                actix_web::error::InternalError::from_response(
                    err,
                    error::render(&error, &request_id::of(req)),
                )
                .into()
            }))
            .service(
                web::resource("/agents/{agent_id}/chat")
                    .route(web::post().to(chat::chat))
                    .default_service(web::to(method_not_allowed::<Quant>)),
            )
            .service(
                web::resource("/chat/executions/{request_id}")
                    .route(web::get().to(executions::get))
                    .default_service(web::to(method_not_allowed::<Quant>)),
            )
            .service(
                web::resource("/sessions")
                    .route(web::post().to(sessions::create))
                    .route(web::get().to(sessions::list))
                    .default_service(web::to(method_not_allowed::<Quant>)),
            )
            .service(
                web::resource("/sessions/{session_id}/extend")
                    .route(web::put().to(sessions::extend))
                    .default_service(web::to(method_not_allowed::<Quant>)),
            )
            .service(
                web::resource("/sessions/{session_id}")
                    .route(web::get().to(sessions::get))
                    .route(web::put().to(sessions::update))
                    .route(web::delete().to(sessions::delete))
                    .default_service(web::to(method_not_allowed::<Quant>)),
            )
            .default_service(web::to(not_found::<Quant>)),
    );
}
