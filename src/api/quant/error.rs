//! Quant error bodies: `{"error":"<machine code>","message":"...","requestId":"..."}`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::api::request_id;
use crate::error::ApiError;

/// A Quant error response body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = QuantErrorBody)]
#[serde(rename_all = "camelCase")]
pub struct Body<'a> {
    /// The machine code (docs/api.md, Errors).
    error: &'static str,
    message: &'a str,
    request_id: &'a str,
}

/// The Quant error body of `err`.
pub fn body(err: &ApiError, request_id: &str) -> String {
    serde_json::to_string(&Body {
        error: err.code.as_str(),
        message: &err.message,
        request_id,
    })
    .unwrap_or_default()
}

pub fn render(err: &ApiError, request_id: &str) -> HttpResponse {
    crate::api::error_response(err, body(err, request_id))
}

/// An [`ApiError`] on the Quant surface.
#[derive(Debug)]
pub struct QuantError {
    pub error: ApiError,
    pub request_id: String,
}

impl QuantError {
    /// Attach the request's id to an error.
    pub fn on(req: &HttpRequest) -> impl FnOnce(ApiError) -> QuantError + '_ {
        move |error| QuantError {
            error,
            request_id: request_id::of(req),
        }
    }
}

impl std::fmt::Display for QuantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for QuantError {
    fn status_code(&self) -> StatusCode {
        self.error.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        render(&self.error, &self.request_id)
    }
}
