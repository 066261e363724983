//! The Cognite chat handler: decode, authenticate, open the cursor, run the
//! turn, seal the new state, render.

use actix_web::{HttpRequest, HttpResponse, web};

use super::error::CogniteError;
use super::once;
use super::wire::{
    ActionAnswer, AgentContent, AgentMessage, Answer, ChatRequest, ChatResponse, ClientTool,
    Reasoning, ResponseBody, TextContent,
};
use crate::api::report;
use crate::api::{AppState, body, request_id, sse};
use crate::cursor::CursorContext;
use crate::domain::{
    ConversationState, HistoryItem, PendingAction, PendingKind, StopReason, ToolCall,
};
use crate::error::{ApiError, ErrorCode};
use crate::limits::{self, Work};
use crate::runtime::{TurnContext, TurnInput, TurnOutcome, run_to_end, run_turn};
use crate::store::Claim;
use crate::tools::{Expose, ToolRegistry, ToolRun, ToolSpec};

/// One turn of an agent: new messages (and answers to pending actions) in,
/// the agent's answer and a new cursor out. Pass the cursor back next turn.
#[utoipa::path(post, path = "/api/v1/projects/{project}/ai/agents/chat", tag = "cognite",
    operation_id = "cognite_chat",
    params(("project" = String, Path, description = "The project (tenant)")),
    request_body = ChatRequest,
    responses((status = 200,
        description = "The turn's answer (JSON), or with `stream: true` or `Accept: text/event-stream` its server-sent events (docs/api.md, Streaming)",
        content(
            (ChatResponse = "application/json"),
            (crate::api::openapi::StreamEvent = "text/event-stream"),
        ))))]
pub async fn chat_in_project(
    req: HttpRequest,
    project: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CogniteError> {
    let request_id = request_id::of(&req);
    // Boxed: the turn's future is large, and actix moves the handler's.
    Box::pin(chat(&req, &project, payload, state))
        .await
        .map_err(|error| CogniteError { error, request_id })
}

/// [`chat_in_project`] in `[server] default_project` (404 without one).
#[utoipa::path(post, path = "/ai/agents/chat", tag = "cognite",
    operation_id = "cognite_chat_default_project",
    request_body = ChatRequest,
    responses((status = 200,
        description = "As `/api/v1/projects/{project}/ai/agents/chat` in the default project",
        content(
            (ChatResponse = "application/json"),
            (crate::api::openapi::StreamEvent = "text/event-stream"),
        ))))]
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
    // Boxed: the turn's future is large, and actix moves the handler's.
    Box::pin(chat(&req, &project, payload, state))
        .await
        .map_err(|error| CogniteError { error, request_id })
}

#[tracing::instrument(name = "cognite_chat", skip_all, fields(project, agent, turn))]
async fn chat(
    req: &HttpRequest,
    project: &str,
    payload: web::Payload,
    data: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let state: &AppState = &data;
    let principal = state.catalog().auth.authenticate(req, project).await?;
    let request: ChatRequest =
        body::read_json(req, payload, state.settings.server.max_body_bytes).await?;
    let chat = request.validate()?;
    let streaming = chat.stream || sse::accepts_event_stream(req);
    let admitted = limits::admit(state, req, &principal, Work::Turn { streaming }).await?;
    let span = tracing::Span::current();
    span.record("project", project);
    span.record("agent", chat.agent.as_str());

    let mut cx = state.turn_context(&chat.agent)?;
    cx.meter = admitted.meter;
    check_client_tools(&cx, &chat.client_tools)?;
    let agent = cx.agent.clone();
    let ctx = CursorContext {
        project: &principal.tenant,
        agent: &agent.id,
        subject: &principal.subject,
    };
    let now = state.clock.now();
    let mut conversation = open_conversation(state, chat.cursor.as_deref(), &ctx, &agent, now)?;
    let (tool_results, approved) = answer_pending(&mut conversation, &chat.answers)?;
    let guard = match claim_confirmation(state, &chat, &ctx, now).await? {
        Claimed::Go(guard) => guard,
        Claimed::Answered(body) => {
            return Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body(body));
        }
    };

    let input = TurnInput {
        messages: chat.messages,
        system_extra: None,
        client_tools: chat.client_tools.into_iter().map(client_spec).collect(),
        tool_results,
        approved,
        can_confirm: true,
        streaming,
    };
    let cx_tools = cx.tools.clone();
    let finisher = Finisher {
        data: data.clone(),
        tools: cx.tools.clone(),
        agent,
        project: principal.tenant,
        subject: principal.subject,
        guard,
    };
    let events = limits::holding(run_turn(cx, conversation, input), admitted.slot);
    if streaming {
        let action_tools = cx_tools.clone();
        return sse::respond(
            req,
            events,
            sse::Renderer {
                finish: move |outcome| finisher.finish(outcome),
                action: move |p: &PendingAction| action(p, &action_tools),
                error_body: super::error::body,
                request_id: request_id::of(req),
            },
        )
        .await;
    }
    // Only the turn itself is abandoned at the end of a drain, never the
    // commit of a confirmation claim.
    let outcome = state
        .unless_drained(async {
            run_to_end(events).await.map_err(|e| {
                tracing::warn!(error = %e, "turn failed");
                ApiError::from(e)
            })
        })
        .await?;
    let body = finisher.finish(outcome).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// A client tool may not take the name of one of the agent's server tools.
fn check_client_tools(cx: &TurnContext, client_tools: &[ClientTool]) -> Result<(), ApiError> {
    let agent = &cx.agent;
    match client_tools
        .iter()
        .find(|t| agent.tools.contains(&t.name) || cx.tools.find(&agent.tools, &t.name).is_some())
    {
        Some(t) => Err(ApiError::invalid(format!(
            "the client tool {:?} has the name of one of the agent's server tools",
            t.name
        ))),
        None => Ok(()),
    }
}

/// The conversation the cursor carries, or a new one.
fn open_conversation(
    state: &AppState,
    cursor: Option<&str>,
    ctx: &CursorContext<'_>,
    agent: &crate::agent::AgentSpec,
    now: i64,
) -> Result<ConversationState, ApiError> {
    let Some(token) = cursor else {
        return Ok(ConversationState::new(now, agent.cfg_hash.clone()));
    };
    let conversation = state.codec.open(token, ctx, now).map_err(|e| {
        tracing::info!(reason = %e, "cursor refused");
        crate::observe::cursor_failure(e.reason());
        ApiError::from(e)
    })?;
    if conversation.cfg != agent.cfg_hash && conversation.turn > 0 {
        tracing::info!(
            "agent configuration changed since the last turn; continuing with the current one"
        );
    }
    Ok(conversation)
}

/// What the single-use check of a confirmation answer decided.
enum Claimed {
    /// Run the turn; with a claim to commit when it answers a confirmation.
    Go(Option<once::Guard>),
    /// The same answer was given before: its response.
    Answered(String),
}

/// A cursor that answers a confirmation is single-use: the same answer again
/// gets the same response, a different one (or one still running) is 409.
async fn claim_confirmation(
    state: &AppState,
    chat: &super::wire::ValidChat,
    ctx: &CursorContext<'_>,
    now: i64,
) -> Result<Claimed, ApiError> {
    let (Some(token), true) = (&chat.cursor, once::answers_confirmation(&chat.answers)) else {
        return Ok(Claimed::Go(None));
    };
    let key = once::key(token).ok_or_else(|| {
        ApiError::from(crate::cursor::CursorError::Invalid(
            crate::cursor::InvalidReason::Shape,
        ))
    })?;
    let answer = once::answer_hash(&chat.answers);
    match state
        .store
        .claim_once(&key, &answer, once_ttl(state), now)
        .await?
    {
        Claim::New => Ok(Claimed::Go(Some(once::Guard::new(
            state.store.clone(),
            key,
        )))),
        Claim::Repeat(Some(sealed)) => {
            let slot = once::slot(&key, ctx.agent);
            let bound = CursorContext {
                agent: &slot,
                ..*ctx
            };
            // Responses stored before they were bound to their claim used the
            // request's own context; they live an hour at most.
            let cached = match state.codec.open_blob(&sealed, &bound, now) {
                Err(crate::cursor::CursorError::Invalid(
                    crate::cursor::InvalidReason::Authentication,
                )) => state.codec.open_blob(&sealed, ctx, now),
                other => other,
            }
            .map_err(|e| ApiError::from_stored(e, "confirmation result", ErrorCode::Conflict))?;
            String::from_utf8(cached.to_vec())
                .map(Claimed::Answered)
                .map_err(|_| ApiError::new(ErrorCode::Internal, "a stored response is not UTF-8"))
        }
        Claim::Repeat(None) => Err(ApiError::new(
            ErrorCode::Conflict,
            "this confirmation is being answered by another request; retry shortly",
        )),
        Claim::Conflict => Err(ApiError::new(
            ErrorCode::Conflict,
            "this confirmation was already answered differently",
        )),
    }
}

/// How long a confirmation's single-use record lives: as long as its cursor.
fn once_ttl(state: &AppState) -> u64 {
    state.settings.cursor.ttl_seconds + crate::cursor::SKEW
}

/// Everything needed to finish a turn once it is done: seal the new state,
/// render the body and commit a confirmation claim. Dropped unused (the
/// turn failed, the client left), it releases the claim.
struct Finisher {
    data: web::Data<AppState>,
    tools: std::sync::Arc<ToolRegistry>,
    agent: std::sync::Arc<crate::agent::AgentSpec>,
    project: String,
    subject: String,
    guard: Option<once::Guard>,
}

impl Finisher {
    async fn finish(self, outcome: TurnOutcome) -> Result<String, ApiError> {
        let ctx = CursorContext {
            project: &self.project,
            agent: &self.agent.id,
            subject: &self.subject,
        };
        let data = &self.data;
        let body = render_outcome(data, &self.agent, &self.tools, outcome, &ctx)?;
        if let Some(guard) = self.guard {
            let ttl = once_ttl(data);
            let exp = (data.clock.now() + ttl as i64) as u64;
            let slot = once::slot(guard.key(), &self.agent.id);
            let bound = CursorContext {
                agent: &slot,
                ..ctx
            };
            let sealed = data.codec.seal_blob(body.as_bytes(), &bound, exp)?;
            data.store
                .finish_once(guard.key(), sealed, ttl, data.clock.now())
                .await?;
            guard.commit();
        }
        Ok(body)
    }
}

/// Seal the turn's new state and render the response body.
fn render_outcome(
    state: &AppState,
    agent: &crate::agent::AgentSpec,
    tools: &ToolRegistry,
    outcome: TurnOutcome,
    ctx: &CursorContext<'_>,
) -> Result<String, ApiError> {
    tracing::Span::current().record("turn", outcome.state.turn);
    let mut new_state = outcome.state;
    let sealed = state
        .codec
        .seal(&mut new_state, agent.budget, ctx, state.clock.now())
        .map_err(ApiError::from)?;
    let response = ChatResponse {
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
                tools,
            )],
        },
    };
    // sonic-rs: SIMD string escaping over the (possibly large) cursor.
    sonic_rs::to_string(&response)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("response: {e}")))
}

/// The agent message: the answer, a notice and a `stopReason` data item on a
/// limit stop, each exposed server tool run as a `toolCall` reasoning item, and
/// the actions the client must answer.
fn agent_message<'a>(
    reply: &'a str,
    stop: StopReason,
    tool_runs: &[ToolRun],
    pending: &[PendingAction],
    tools: &ToolRegistry,
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
                "id": r.call.id, "name": r.call.name, "toolType": super::wire::tool_type(r.origin), "input": report::input(r)
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
    let actions = pending.iter().map(|p| action(p, tools)).collect();
    AgentMessage {
        role: "agent",
        content,
        actions,
        data,
        reasoning,
    }
}

fn action(p: &PendingAction, tools: &ToolRegistry) -> serde_json::Value {
    match p.kind {
        PendingKind::ClientTool => serde_json::json!({
            "type": "clientTool",
            "actionId": p.action_id,
            "clientTool": {"name": p.name, "arguments": p.arguments},
        }),
        PendingKind::ToolConfirmation => {
            let tool = tools.tool(&p.name);
            let spec = tool.as_ref().map(|t| t.spec());
            let arguments: serde_json::Value = crate::tools::parse_arguments(&p.arguments)
                .unwrap_or_else(|_| serde_json::json!({}));
            serde_json::json!({
                "type": "toolConfirmation",
                "actionId": p.action_id,
                "toolConfirmation": {
                    "content": {"type": "text", "text": format!("The agent wants to run the tool {:?}. Do you allow it?", p.name)},
                    "toolName": p.name,
                    "toolArguments": arguments,
                    "toolDescription": spec.map(|s| s.description.as_str()).unwrap_or_default(),
                    "toolType": spec.map_or("callFunction", |s| super::wire::tool_type(s.origin)),
                },
            })
        }
    }
}

/// Match the answers to the conversation's pending actions: every pending
/// action must be answered with its own kind, and only pending actions may be.
/// Returns the tool results to record and the confirmed calls to run.
fn answer_pending(
    conversation: &mut ConversationState,
    answers: &[ActionAnswer],
) -> Result<(Vec<HistoryItem>, Vec<ToolCall>), ApiError> {
    for (i, a) in answers.iter().enumerate() {
        if answers[..i].iter().any(|b| b.action_id == a.action_id) {
            return Err(ApiError::invalid(format!(
                "action {:?} is answered more than once; send one answer per action",
                crate::error::prefix(&a.action_id, 100)
            )));
        }
        let Some(p) = conversation
            .pending
            .iter()
            .find(|p| p.action_id == a.action_id)
        else {
            return Err(ApiError::invalid(format!(
                "actionId {:?} does not match any action this conversation is waiting for",
                a.action_id
            )));
        };
        let fits = matches!(
            (&a.answer, p.kind),
            (Answer::ClientTool(_), PendingKind::ClientTool)
                | (Answer::Confirmation(_), PendingKind::ToolConfirmation)
        );
        if !fits {
            return Err(ApiError::invalid(format!(
                "action {:?} expects a {} result",
                a.action_id,
                if p.kind == PendingKind::ClientTool {
                    "clientTool"
                } else {
                    "toolConfirmation"
                }
            )));
        }
    }
    if let Some(p) = conversation
        .pending
        .iter()
        .find(|p| !answers.iter().any(|a| a.action_id == p.action_id))
    {
        return Err(ApiError::invalid(format!(
            "the conversation is waiting for the answer to action {:?} ({} {}); send it as a message with role \"action\"",
            p.action_id,
            if p.kind == PendingKind::ClientTool {
                "clientTool"
            } else {
                "toolConfirmation"
            },
            p.name
        )));
    }
    let mut results = Vec::new();
    let mut approved = Vec::new();
    for p in std::mem::take(&mut conversation.pending) {
        let Some(a) = answers.iter().find(|a| a.action_id == p.action_id) else {
            continue;
        };
        match &a.answer {
            Answer::ClientTool(content) => results.push(HistoryItem::ToolResult {
                call_id: p.call_id,
                name: p.name,
                content: content.clone(),
                is_error: false,
            }),
            Answer::Confirmation(true) => approved.push(ToolCall {
                id: p.call_id,
                name: p.name,
                arguments: p.arguments,
            }),
            Answer::Confirmation(false) => results.push(HistoryItem::ToolResult {
                call_id: p.call_id,
                name: p.name,
                content: "the user refused to run this tool".into(),
                is_error: true,
            }),
        }
    }
    Ok((results, approved))
}

fn client_spec(t: ClientTool) -> ToolSpec {
    ToolSpec {
        name: t.name,
        description: t.description,
        parameters: t.parameters,
        origin: crate::tools::ToolOrigin::Client,
        timeout: std::time::Duration::ZERO,
        expose: Expose::Full,
        confirm: false,
    }
}
