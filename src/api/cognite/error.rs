//! Cognite error bodies:
//! `{"error":{"code":<status>,"message":"...","type":"<machine code>","requestId":"..."}}`,
//! with `missing:[{"externalId":...}]` on `agent_not_found`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::error::ApiError;

/// A Cognite error response body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = CogniteErrorBody)]
pub struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = CogniteErrorDetail)]
#[serde(rename_all = "camelCase")]
pub struct Inner<'a> {
    /// The HTTP status.
    code: u16,
    message: &'a str,
    /// The machine code (docs/api.md, Errors).
    #[serde(rename = "type")]
    kind: &'static str,
    request_id: &'a str,
    /// The agents not found (on `agent_not_found`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing: Vec<Missing<'a>>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = CogniteMissing)]
#[serde(rename_all = "camelCase")]
pub struct Missing<'a> {
    external_id: &'a str,
}

/// The Cognite error body of `err`.
pub fn body(err: &ApiError, request_id: &str) -> String {
    let status = err.code.status();
    serde_json::to_string(&Body {
        error: Inner {
            code: status.as_u16(),
            message: &err.message,
            kind: err.code.as_str(),
            request_id,
            missing: err
                .missing
                .iter()
                .map(|id| Missing { external_id: id })
                .collect(),
        },
    })
    .unwrap_or_default()
}

/// Render `err` as a Cognite error response.
pub fn render(err: &ApiError, request_id: &str) -> HttpResponse {
    crate::api::error_response(err, body(err, request_id))
}

/// An [`ApiError`] on the Cognite surface, with the request id it belongs to.
#[derive(Debug)]
pub struct CogniteError {
    pub error: ApiError,
    pub request_id: String,
}

impl std::fmt::Display for CogniteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for CogniteError {
    fn status_code(&self) -> StatusCode {
        self.error.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        render(&self.error, &self.request_id)
    }
}
