//! The Cognite chat handler: decode, authenticate, open the cursor, run the
//! turn, seal the new state, render.

use actix_web::{HttpRequest, HttpResponse, web};

use super::error::CogniteError;
use super::wire::{
    ActionAnswer, AgentContent, AgentMessage, ChatRequest, ChatResponse, ClientTool, Reasoning,
    ResponseBody, TextContent,
};
use crate::api::report;
use crate::api::{AppState, body, request_id};
use crate::auth;
use crate::cursor::CursorContext;
use crate::domain::{ConversationState, HistoryItem, PendingAction, StopReason};
use crate::error::{ApiError, ErrorCode};
use crate::runtime::{TurnInput, run_to_end, run_turn};
use crate::tools::{Expose, ToolRun, ToolSpec};

pub async fn chat_in_project(
    req: HttpRequest,
    project: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CogniteError> {
    let request_id = request_id::of(&req);
    chat(&req, &project, payload, &state)
        .await
        .map_err(|error| CogniteError { error, request_id })
}

pub async fn chat_default_project(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CogniteError> {
    let request_id = request_id::of(&req);
    let Some(project) = state.settings.server.default_project.clone() else {
        return Err(CogniteError {
            error: ApiError::new(
                ErrorCode::NotFound,
                "no default project is configured; use /api/v1/projects/{project}/ai/agents/chat",
            ),
            request_id,
        });
    };
    chat(&req, &project, payload, &state)
        .await
        .map_err(|error| CogniteError { error, request_id })
}

#[tracing::instrument(name = "cognite_chat", skip_all, fields(project, agent, turn))]
async fn chat(
    req: &HttpRequest,
    project: &str,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let principal = auth::authenticate(&state.settings.auth, req, project)?;
    let request: ChatRequest =
        body::read_json(req, payload, state.settings.server.max_body_bytes).await?;
    let chat = request.validate()?;
    let span = tracing::Span::current();
    span.record("project", project);
    span.record("agent", chat.agent.as_str());

    let cx = state.turn_context(&chat.agent)?;
    let agent = cx.agent.clone();
    let ctx = CursorContext {
        project: &principal.tenant,
        agent: &agent.id,
        subject: &principal.subject,
    };
    let now = state.clock.now();
    if let Some(t) = chat
        .client_tools
        .iter()
        .find(|t| agent.tools.contains(&t.name))
    {
        return Err(ApiError::invalid(format!(
            "the client tool {:?} has the name of one of the agent's server tools",
            t.name
        )));
    }
    let mut conversation = match chat.cursor.as_deref() {
        Some(token) => state.codec.open(token, &ctx, now).map_err(|e| {
            tracing::info!(reason = %e, "cursor refused");
            ApiError::from(e)
        })?,
        None => ConversationState::new(now, agent.cfg_hash.clone()),
    };
    if conversation.cfg != agent.cfg_hash && conversation.turn > 0 {
        tracing::info!(
            "agent configuration changed since the last turn; continuing with the current one"
        );
    }

    let mut messages = answer_pending(&mut conversation, chat.answers)?;
    messages.extend(chat.messages);
    let input = TurnInput {
        messages,
        system_extra: None,
        client_tools: chat.client_tools.into_iter().map(client_spec).collect(),
    };
    let outcome = run_to_end(run_turn(cx, conversation, input))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "turn failed");
            ApiError::from(e)
        })?;
    span.record("turn", outcome.state.turn);
    let mut new_state = outcome.state;
    let sealed = state
        .codec
        .seal(&mut new_state, agent.budget, &ctx, state.clock.now())
        .map_err(ApiError::from)?;

    Ok(HttpResponse::Ok().json(ChatResponse {
        agent_external_id: &agent.id,
        agent_id: &agent.id,
        response: ResponseBody {
            kind: "result",
            cursor: &sealed.token,
            messages: vec![agent_message(
                &outcome.reply,
                outcome.stop_reason,
                &outcome.tool_runs,
                &new_state.pending,
            )],
        },
    }))
}

/// The agent message: the answer, a notice and a `stopReason` data item on a
/// limit stop, and each exposed server tool run as a `toolCall` reasoning item.
fn agent_message<'a>(
    reply: &'a str,
    stop: StopReason,
    tool_runs: &[ToolRun],
    pending: &[PendingAction],
) -> AgentMessage<'a> {
    let text = |text| TextContent { kind: "text", text };
    let notice = report::limit_notice(stop);
    let content = match notice {
        None => AgentContent::One(text(reply)),
        Some(n) if reply.is_empty() => AgentContent::One(text(n)),
        Some(n) => AgentContent::Many(vec![text(reply), text(n)]),
    };
    let data = notice
        .map(|_| serde_json::json!({"type": "stopReason", "value": stop.as_str()}))
        .into_iter()
        .collect();
    let calls: Vec<serde_json::Value> = report::exposed(tool_runs)
        .map(|(r, with_result)| {
            let mut call = serde_json::json!({
                "id": r.call.id, "name": r.call.name, "toolType": r.tool_type, "input": report::input(r)
            });
            if with_result {
                call["result"] = serde_json::json!({"content": r.content, "isError": r.is_error});
            }
            serde_json::json!({"type": "toolCall", "toolCall": call})
        })
        .collect();
    let reasoning = if calls.is_empty() {
        Vec::new()
    } else {
        vec![Reasoning {
            content: Vec::new(),
            data: calls,
        }]
    };
    let actions = pending
        .iter()
        .map(|p| {
            serde_json::json!({
                "type": "clientTool",
                "actionId": p.action_id,
                "clientTool": {"name": p.name, "arguments": p.arguments},
            })
        })
        .collect();
    AgentMessage {
        role: "agent",
        content,
        actions,
        data,
        reasoning,
    }
}

/// The tool results that answer the conversation's pending client actions.
/// Every pending action must be answered, and only pending actions may be.
fn answer_pending(
    conversation: &mut ConversationState,
    answers: Vec<ActionAnswer>,
) -> Result<Vec<HistoryItem>, ApiError> {
    for a in &answers {
        if !conversation
            .pending
            .iter()
            .any(|p| p.action_id == a.action_id)
        {
            return Err(ApiError::invalid(format!(
                "actionId {:?} does not match any action this conversation is waiting for",
                a.action_id
            )));
        }
    }
    if let Some(p) = conversation
        .pending
        .iter()
        .find(|p| !answers.iter().any(|a| a.action_id == p.action_id))
    {
        return Err(ApiError::invalid(format!(
            "the conversation is waiting for the result of action {:?} ({} {}); send it as a message with role \"action\"",
            p.action_id, "clientTool", p.name
        )));
    }
    let pending = std::mem::take(&mut conversation.pending);
    Ok(pending
        .into_iter()
        .filter_map(|p| {
            let answer = answers.iter().find(|a| a.action_id == p.action_id)?;
            Some(HistoryItem::ToolResult {
                call_id: p.call_id,
                name: p.name,
                content: answer.content.clone(),
                is_error: false,
            })
        })
        .collect())
}

fn client_spec(t: ClientTool) -> ToolSpec {
    ToolSpec {
        name: t.name,
        description: t.description,
        parameters: t.parameters,
        tool_type: "clientTool",
        timeout: std::time::Duration::ZERO,
        expose: Expose::Full,
    }
}
