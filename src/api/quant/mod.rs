//! The Quant-style AI API: agent chat with server-side sessions, the sessions
//! API and async executions, under `/api/v3/organizations/{org}/ai` (also the
//! `organisations` spelling).

pub mod chat;
pub mod error;
pub mod executions;
pub mod sessions;
pub mod wire;

use actix_web::http::Method;
use actix_web::web;

use crate::api::{Quant, Sink, not_found, request_id};
use crate::error::ApiError;

/// The prefix of every Quant route (both spellings of `organizations`).
pub const PREFIX: &str = "/api/v3/{spelling:organi[sz]ations}/{org}/ai";

/// Register the Quant routes under [`PREFIX`].
pub fn register(sink: &mut Sink<'_>) {
    match sink {
        Sink::Config(cfg) => {
            cfg.service(
                web::scope(PREFIX)
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
                    .configure(|cfg| resources(&mut Sink::Config(cfg)))
                    .default_service(web::to(not_found::<Quant>)),
            );
        }
        Sink::List { prefix, routes } => resources(&mut Sink::List {
            prefix: format!("{prefix}{PREFIX}"),
            routes,
        }),
    }
}

fn resources(sink: &mut Sink<'_>) {
    sink.resource::<Quant>(
        "/agents/{agent_id}/chat",
        vec![(Method::POST, web::route().to(chat::chat))],
    );
    sink.resource::<Quant>(
        "/chat/executions/{request_id}",
        vec![(Method::GET, web::route().to(executions::get))],
    );
    sink.resource::<Quant>(
        "/sessions",
        vec![
            (Method::POST, web::route().to(sessions::create)),
            (Method::GET, web::route().to(sessions::list)),
        ],
    );
    sink.resource::<Quant>(
        "/sessions/{session_id}/extend",
        vec![(Method::PUT, web::route().to(sessions::extend))],
    );
    sink.resource::<Quant>(
        "/sessions/{session_id}",
        vec![
            (Method::GET, web::route().to(sessions::get)),
            (Method::PUT, web::route().to(sessions::update)),
            (Method::DELETE, web::route().to(sessions::delete)),
        ],
    );
}
