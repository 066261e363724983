//! The OpenAPI 3.1 document (`GET /openapi.json`) and its Swagger UI (`GET
//! /docs`).
//!
//! The document is generated from the code: each handler's
//! `#[utoipa::path]` (method, path, parameters, request and success bodies)
//! and the wire types' `ToSchema`. What every operation shares is added here
//! from the same tables the code uses: the error responses of each status
//! with the machine codes [`ErrorCode::ALL`] gives it, in the API's own error
//! body, and the `X-Request-Id`, `Retry-After` and `x-ratelimit-*` headers.
//! A test compares the document's operations with [`super::route_table`].
//!
//! The Swagger UI files are compiled into the binary
//! (`utoipa-swagger-ui`'s vendored copy): the page loads nothing from any
//! other host, and its validator badge (which would call one) is off.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use super::{cognite, health, quant};
use crate::error::{ApiError, ErrorCode};

/// One server-sent event of a streamed turn (`text/event-stream`): an
/// `event:` line naming its type, an `id:` line (1, 2, …) and a `data:`
/// line holding JSON. A stream ends after exactly one `done` or `error`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamEvent {
    /// `delta` (`{"text"}`: a piece of the answer), `tool_call` (`{"id",
    /// "name", "arguments"}`), `tool_result` (`{"id", "name", "ok"}`),
    /// `action` (Cognite: a client action, as in the final `actions`),
    /// `usage` (`{"inputTokens", "outputTokens", "cacheReadTokens",
    /// "cacheWriteTokens"}`), `done` (the body the non-streamed call would
    /// return), `error` (the API's error body; the turn is abandoned).
    pub event: StreamEventType,
    /// The event's number in the stream.
    pub id: String,
    /// The event's JSON payload (see `event`).
    pub data: String,
}

/// The types of [`StreamEvent`].
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamEventType {
    Delta,
    ToolCall,
    ToolResult,
    Action,
    Usage,
    Done,
    Error,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentgate",
        description = "A stateless AI agent gateway. The Cognite-style API carries the whole \
            conversation in an encrypted cursor the client passes back every turn; the \
            Quant-style API keeps server-side sessions. Errors use each API's own body; the \
            machine codes are listed per status.",
    ),
    paths(
        cognite::handlers::chat_in_project,
        cognite::handlers::chat_default_project,
        quant::chat::chat,
        quant::executions::get,
        quant::sessions::create,
        quant::sessions::list,
        quant::sessions::get,
        quant::sessions::update,
        quant::sessions::extend,
        quant::sessions::delete,
        health::healthz,
        health::readyz,
        health::metrics,
        health::reload,
        document,
        docs_root,
        docs_file,
        super::playground::page,
        super::playground::agents,
    ),
    components(schemas(
        StreamEvent,
        cognite::error::Body,
        quant::error::Body,
    )),
    tags(
        (name = "cognite", description = "Cognite-style agents chat: stateless, with cursors"),
        (name = "quant", description = "Quant-style AI API: sessions, streaming, async executions"),
        (name = "operations", description = "Health, metrics, reload and these docs"),
    )
)]
struct ApiDoc;

/// Which error body an operation answers with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Cognite,
    Quant,
}

/// The statuses an API operation may answer with besides its successes.
fn api_error_statuses() -> BTreeMap<u16, Vec<&'static str>> {
    let mut by_status: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for code in ErrorCode::ALL {
        // 405 is for methods no operation documents.
        if code != ErrorCode::MethodNotAllowed {
            by_status
                .entry(code.status().as_u16())
                .or_default()
                .push(code.as_str());
        }
    }
    by_status
}

/// What one operation may fail with: `None` for the API operations (every
/// status of [`api_error_statuses`]).
fn operation_errors(path: &str) -> Option<Vec<(u16, &'static str)>> {
    match path {
        "/admin/reload" => Some(vec![
            (400, "invalid_request"),
            (401, "unauthorized"),
            (403, "forbidden"),
        ]),
        "/docs/{file}" => Some(vec![(404, "not_found")]),
        p if p.starts_with("/api/") || p == "/ai/agents/chat" => None,
        _ => Some(Vec::new()),
    }
}

fn header_schema(description: &str, kind: &str) -> Value {
    json!({"description": description, "schema": {"type": kind}})
}

/// The headers of every response.
fn common_headers(api: bool) -> serde_json::Map<String, Value> {
    let mut h = serde_json::Map::new();
    h.insert(
        "X-Request-Id".into(),
        header_schema(
            "The request's id: the caller's `X-Request-Id` when it matches `[A-Za-z0-9._-]{1,128}`, else a new one; every log line of the request carries it",
            "string",
        ),
    );
    if api {
        for kind in ["requests", "tokens"] {
            let what = if kind == "tokens" {
                "model tokens (turns only)"
            } else {
                "requests"
            };
            h.insert(
                format!("x-ratelimit-limit-{kind}"),
                header_schema(
                    &format!(
                        "With `[rate_limits]`: the tightest per-minute limit of {what} that applies"
                    ),
                    "integer",
                ),
            );
            h.insert(
                format!("x-ratelimit-remaining-{kind}"),
                header_schema(&format!("What is left of that limit of {what}"), "integer"),
            );
            h.insert(
                format!("x-ratelimit-reset-{kind}"),
                header_schema(
                    "How long until that bucket is full again (`250ms`, `7s`, `6m0s`)",
                    "string",
                ),
            );
        }
    }
    h
}

/// The error response for `status` with its machine `codes`.
fn error_response(format: Format, status: u16, codes: &[&str]) -> Value {
    let schema = match format {
        Format::Cognite => "#/components/schemas/CogniteErrorBody",
        Format::Quant => "#/components/schemas/QuantErrorBody",
    };
    let mut headers = common_headers(true);
    if matches!(status, 429 | 503) {
        headers.insert(
            "Retry-After".into(),
            header_schema("Seconds to wait before retrying", "integer"),
        );
    }
    if status == 401 {
        headers.insert(
            "WWW-Authenticate".into(),
            header_schema("`Bearer`", "string"),
        );
    }
    let list = codes
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    json!({
        "description": format!("An error: {list} (docs/api.md, Errors)"),
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": schema}}}
    })
}

/// Add what every operation shares to the generated document.
fn complete(doc: &mut Value) {
    let api_errors = api_error_statuses();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let format = if path.starts_with("/api/v3/") {
            Format::Quant
        } else {
            Format::Cognite
        };
        let errors = operation_errors(path);
        let api = errors.is_none();
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for response in responses.values_mut() {
                if let Some(r) = response.as_object_mut() {
                    let headers = r.entry("headers").or_insert_with(|| json!({}));
                    if let Some(h) = headers.as_object_mut() {
                        h.extend(common_headers(api));
                    }
                }
            }
            match &errors {
                None => {
                    for (status, codes) in &api_errors {
                        responses
                            .insert(status.to_string(), error_response(format, *status, codes));
                    }
                }
                Some(list) => {
                    for (status, code) in list {
                        responses
                            .insert(status.to_string(), error_response(format, *status, &[code]));
                    }
                }
            }
            if api || path == "/admin/reload" {
                let security = if api {
                    // Optional: `[auth] mode = "none"` needs no credentials.
                    json!([{"bearer": []}, {}])
                } else {
                    json!([{"bearer": []}])
                };
                operation["security"] = security;
            }
        }
    }
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`[auth] mode = \"api_keys\"`) or an OIDC token (`mode = \"jwt\"`); none with `mode = \"none\"`. `/admin/reload` needs an admin key."
        }
    });
}

/// The whole document, as JSON.
pub fn openapi() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    complete(&mut doc);
    doc
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| openapi().to_string());

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

static UI_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> = LazyLock::new(|| {
    Arc::new(utoipa_swagger_ui::Config::new(["/openapi.json"]).validator_url("none"))
});

/// Redirect to the docs page.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 308, description = "To `/docs/`",
        headers(("Location" = String, description = "`/docs/`")))))]
pub async fn docs_root() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// The Swagger UI page and its files, all bundled into the binary.
#[utoipa::path(get, path = "/docs/{file}", tag = "operations",
    params(("file" = String, Path, description = "A file of the page; empty for `index.html`")),
    responses((status = 200, description = "The file", content_type = "text/html", body = String)))]
pub async fn docs_file(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    match utoipa_swagger_ui::serve(&file, UI_CONFIG.clone()) {
        Ok(Some(f)) => {
            let mut res = HttpResponse::Ok();
            res.content_type(f.content_type);
            if f.gzpipped {
                res.insert_header((header::CONTENT_ENCODING, "gzip"));
            }
            res.body(f.bytes.into_owned())
        }
        _ => cognite::error::render(
            &ApiError::new(ErrorCode::NotFound, "no such file in the docs page"),
            &super::request_id::of(&req),
        ),
    }
}
