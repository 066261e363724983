//! `GET /api/v3/organizations/{org}/ai/chat/executions/{requestId}`.

use actix_web::{HttpRequest, HttpResponse, web};

use super::error::QuantError;
use super::wire::{
    AssistantResponse, Execution, ExecutionError, ExecutionPath, ExecutionResult, UsageOut,
    timestamp,
};
use crate::api::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::jobs;

/// An async execution: `queued`, `running`, `complete` (with the result) or
/// `failed` (with the error).
#[utoipa::path(get, path = "/api/v3/organizations/{org}/ai/chat/executions/{request_id}", tag = "quant",
    operation_id = "quant_execution",
    params(ExecutionPath),
    responses((status = 200, description = "The execution", body = Execution)))]
pub async fn get(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    app: web::Data<AppState>,
) -> Result<HttpResponse, QuantError> {
    let (_, org, id) = path.into_inner();
    render(&req, &org, &id, &app)
        .await
        .map_err(QuantError::on(&req))
}

async fn render(
    req: &HttpRequest,
    org: &str,
    id: &str,
    app: &AppState,
) -> Result<HttpResponse, ApiError> {
    let principal = app.catalog().auth.authenticate(req, org).await?;
    crate::limits::admit(app, req, &principal, crate::limits::Work::Read).await?;
    let not_found = || ApiError::new(ErrorCode::ExecutionNotFound, "execution not found");
    let rec = app
        .store
        .get_execution(id, app.clock.now())
        .await?
        .filter(|r| r.org == principal.tenant && r.subject == principal.subject)
        .ok_or_else(not_found)?;
    let result = match &rec.result {
        Some(sealed) => Some(jobs::open_result(app, &rec, sealed)?),
        None => None,
    };
    let body = Execution {
        request_id: &rec.id,
        status: rec.status.as_str(),
        agent_id: &rec.agent_id,
        session_id: &rec.session_id,
        created_at: timestamp(rec.created_at),
        updated_at: timestamp(rec.updated_at),
        result: result.as_ref().map(|r| ExecutionResult {
            response: AssistantResponse {
                role: "assistant",
                content: &r.text,
            },
            usage: UsageOut::new(
                crate::domain::Usage {
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cache_read_tokens: r.cache_read_tokens,
                    cache_write_tokens: r.cache_write_tokens,
                },
                true,
            ),
            tool_executions: if r.tool_runs.is_empty() {
                r.legacy_tool_executions.clone()
            } else {
                crate::api::report::quant_tool_results(&r.tool_runs)
            },
            session_id: &rec.session_id,
            stop_reason: &r.stop_reason,
        }),
        error: rec
            .error
            .as_ref()
            .map(|(message, kind)| ExecutionError { message, kind }),
    };
    Ok(HttpResponse::Ok().json(body))
}
