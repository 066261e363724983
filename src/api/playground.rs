//! The browser playground at `/playground` (`[playground] enabled = true`):
//! one page (HTML, CSS and JavaScript compiled into the binary; nothing from
//! elsewhere) that talks to the public APIs with the caller's own token, and
//! the agent list it offers, which needs the same credentials as the API.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, Cognite, ErrorFormat};
use crate::error::{ApiError, ErrorCode};

const PAGE: &str = include_str!("playground.html");

/// One agent a caller may chat with.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    /// The server tools it may use.
    pub tools: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentsQuery {
    /// The project (or organisation) the caller's credentials are checked for.
    pub project: String,
}

fn disabled(req: &HttpRequest) -> HttpResponse {
    Cognite::render(
        &ApiError::new(ErrorCode::NotFound, "the playground is not enabled"),
        &super::request_id::of(req),
    )
}

/// The page. It holds no data: everything it shows comes from API calls made
/// with the credentials typed into it.
#[utoipa::path(get, path = "/playground", tag = "operations",
    responses(
        (status = 200, description = "The playground page", content_type = "text/html", body = String),
        (status = 404, description = "`[playground] enabled` is false")))]
pub async fn page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if !state.settings.playground.enabled {
        return disabled(&req);
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // Nothing but this page's own inline code, and calls to this origin.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(PAGE)
}

/// The agents the page offers, for a caller allowed in `project`.
#[utoipa::path(get, path = "/playground/agents", tag = "operations",
    params(AgentsQuery),
    responses(
        (status = 200, description = "The configured agents", body = Vec<AgentInfo>),
        (status = 404, description = "`[playground] enabled` is false")))]
pub async fn agents(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if !state.settings.playground.enabled {
        return disabled(&req);
    }
    let render = |e: &ApiError| Cognite::render(e, &super::request_id::of(&req));
    // Parsed here so that a bad query string gets this API's error body.
    let query = match web::Query::<AgentsQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => {
            return render(&ApiError::invalid(format!(
                "the query string is not valid: {}",
                crate::error::prefix(&e.to_string(), 300)
            )));
        }
    };
    let catalog = state.catalog();
    if let Err(e) = catalog.auth.authenticate(&req, &query.project).await {
        return render(&e);
    }
    let list: Vec<AgentInfo> = catalog
        .agents
        .all()
        .into_iter()
        .map(|a| AgentInfo {
            id: a.id.clone(),
            name: a.name.clone(),
            tools: a.tools.clone(),
        })
        .collect();
    HttpResponse::Ok().json(list)
}
