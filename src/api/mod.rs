//! HTTP only: routing, request ids, body decoding, health, and one facade per
//! public API shape. Facades parse wire types at the edge and call the engine.

pub mod body;
pub mod cognite;
pub mod health;
pub mod request_id;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use actix_web::{HttpRequest, HttpResponse, web};

use crate::agent::AgentRegistry;
use crate::clock::Clock;
use crate::config::Settings;
use crate::cursor::CursorCodec;
use crate::error::{ApiError, ErrorCode};
use crate::llm::ProviderRegistry;

/// Lifecycle as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// Everything a request handler needs, shared by all workers.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub codec: CursorCodec,
    pub agents: AgentRegistry,
    pub providers: ProviderRegistry,
    pub clock: Arc<dyn Clock>,
    lifecycle: AtomicU8,
}

impl AppState {
    pub fn new(
        settings: Settings,
        codec: CursorCodec,
        agents: AgentRegistry,
        providers: ProviderRegistry,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            settings,
            codec,
            agents,
            providers,
            clock,
            lifecycle: AtomicU8::new(Lifecycle::Starting as u8),
        }
    }

    pub fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::SeqCst) {
            0 => Lifecycle::Starting,
            1 => Lifecycle::Ready,
            _ => Lifecycle::Draining,
        }
    }

    pub fn set_lifecycle(&self, l: Lifecycle) {
        self.lifecycle.store(l as u8, Ordering::SeqCst);
    }
}

/// Register every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(health::healthz)))
        .service(web::resource("/readyz").route(web::get().to(health::readyz)))
        .service(
            web::resource("/api/v1/projects/{project}/ai/agents/chat")
                .route(web::post().to(cognite::handlers::chat_in_project))
                .default_service(web::to(method_not_allowed)),
        )
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
