//! `POST /api/v3/organizations/{org}/ai/agents/{agentId}/chat`: sync or async.

use actix_web::{HttpRequest, HttpResponse, web};

use super::error::QuantError;
use super::wire::{
    Accepted, AgentPath, ChatRequest, ChatResponse, ChatResponseBody, UsageOut, check_user_id,
};
use crate::api::{AppState, body, report, request_id, sse};
use crate::error::ApiError;
use crate::idempotency::{self, Idempotency, KeyError};
use crate::jobs;
use crate::limits::{self, Work};
use crate::runtime::run_turn;
use crate::sessions::{self, ChatTurn, Scope, SessionError};
use crate::store::{ExecutionRecord, ExecutionStatus, StoreError};

/// One turn in a server-side session: synchronous (200), streamed
/// (`stream: true`, server-sent events) or queued (`async: true`, 202 with a
/// poll URL).
#[utoipa::path(post, path = "/api/v3/organizations/{org}/ai/agents/{agent_id}/chat", tag = "quant",
    operation_id = "quant_chat",
    params(
        AgentPath,
        ("Idempotency-Key" = Option<String>, Header,
            description = "1 to 255 visible ASCII characters: a replay of the same request answers its recorded response (`Idempotent-Replayed: true`) instead of running it again (docs/api.md)"),
    ),
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The turn's answer (JSON), or with `stream: true` its server-sent events (docs/api.md, Streaming)",
            content(
            (ChatResponse = "application/json"),
            (crate::api::openapi::StreamEvent = "text/event-stream"),
        )),
        (status = 202, description = "Queued (`async: true`): poll `pollUrl`", body = Accepted),
    ))]
pub async fn chat(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, QuantError> {
    let (spelling, org, agent_id) = path.into_inner();
    // Boxed: the turn's future is large, and actix moves the handler's.
    Box::pin(handle(&req, &spelling, org, agent_id, payload, state))
        .await
        .map_err(QuantError::on(&req))
}

#[tracing::instrument(name = "quant_chat", skip_all, fields(org = %org, agent = %agent_id))]
async fn handle(
    req: &HttpRequest,
    spelling: &str,
    org: String,
    agent_id: String,
    payload: web::Payload,
    data: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app: &AppState = &data;
    let principal = app.catalog().auth.authenticate(req, &org).await?;
    crate::ids::check("agent id", &agent_id).map_err(ApiError::invalid)?;
    let body: ChatRequest =
        body::read_json(req, payload, app.settings.server.max_body_bytes).await?;
    let message = body
        .message
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("message is required and must not be empty"))?;
    check_user_id(body.user_id.as_deref())?;
    let streaming = body.stream.unwrap_or(false);
    let run_async = body.run_async.unwrap_or(false);
    if streaming && run_async {
        return Err(ApiError::invalid("stream and async cannot be combined"));
    }
    let key = idempotency_key(req)?;
    if key.is_some() && streaming {
        return Err(ApiError::invalid(
            "Idempotency-Key applies to synchronous and async turns, not to streams \
             (a stream is never replayed once it has started)",
        ));
    }
    let admitted = limits::admit(app, req, &principal, Work::Turn { streaming }).await?;
    let scope = Scope {
        org: principal.tenant.clone(),
        subject: principal.subject,
    };
    let idempotency = key.map(|key| {
        Idempotency::new(
            key,
            &scope,
            body.user_id.as_deref(),
            &agent_id,
            idempotency::Request {
                session_id: body.session_id.as_deref(),
                message: &message,
                system: body.system.as_deref(),
                run_async,
            },
        )
    });
    let turn = ChatTurn {
        meter: admitted.meter,
        scope,
        user_id: body.user_id,
        agent_id,
        session_id: body.session_id,
        message,
        system: body.system,
        idempotency,
    };
    if run_async {
        return accept(app, spelling, &org, turn).await;
    }
    if streaming {
        let (prepared, cx, conversation, input) = sessions::prepare(app, turn, true).await?;
        let finish_data = data.clone();
        return sse::respond(
            req,
            limits::holding(run_turn(cx, conversation, input), admitted.slot),
            sse::Renderer {
                finish: move |outcome| async move {
                    let reply = sessions::finish(
                        &finish_data,
                        prepared,
                        outcome,
                        sessions::Commit::Nothing,
                    )
                    .await?;
                    Ok(response_body(&reply))
                },
                action: |_: &crate::domain::PendingAction| serde_json::Value::Null,
                error_body: super::error::body,
                request_id: request_id::of(req),
            },
        )
        .await;
    }
    if let Some(idem) = &turn.idempotency
        && execution_of(app, &turn, &idem.derived_id("execution"))
            .await?
            .is_some()
    {
        // The key queued an async request.
        return Err(SessionError::KeyReused.into());
    }
    if let Some(recorded) = sessions::replayed(app, &turn).await? {
        return Ok(replay(recorded));
    }
    let idempotent = turn.idempotency.is_some().then(|| turn.without_content());
    // Only the turn itself is abandoned at the end of a drain, never the
    // session write that commits it.
    let (prepared, outcome) = app
        .unless_drained(async { Ok(sessions::run(app, turn).await?) })
        .await?;
    let Some(turn) = idempotent else {
        let reply = sessions::finish(app, prepared, outcome, sessions::Commit::Nothing).await?;
        return Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(response_body(&reply)));
    };
    // The response is recorded with the key in the turn's own session write.
    let mark = turn
        .idempotency
        .as_ref()
        .map(Idempotency::mark)
        .unwrap_or_default();
    // Rendered once: sealed for replays, then sent.
    let rendered = std::sync::OnceLock::new();
    let seal = |reply: &sessions::ChatReply| {
        let body: &String = rendered.get_or_init(|| response_body(reply));
        sessions::seal_response(app, &turn, &reply.session_id, body.as_bytes())
    };
    let commit = sessions::Commit::Key(sessions::KeyCommit {
        mark,
        seal_response: &seal,
    });
    match sessions::finish(app, prepared, outcome, commit).await {
        Ok(reply) => Ok(HttpResponse::Ok().content_type("application/json").body(
            rendered
                .into_inner()
                .unwrap_or_else(|| response_body(&reply)),
        )),
        // Another attempt of this same request (a balancer's retry while
        // this one was still running) committed first: answer its response.
        Err(SessionError::Store(StoreError::Conflict | StoreError::Exists)) => {
            match sessions::replayed(app, &turn).await? {
                Some(recorded) => Ok(replay(recorded)),
                None => Err(SessionError::Store(StoreError::Conflict).into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The `Idempotency-Key` header, if sent (at most one, well formed).
fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let mut values = req.headers().get_all(idempotency::HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid(KeyError::Repeated.to_string()));
    }
    idempotency::parse_key(value.as_bytes())
        .map(Some)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

/// The execution `request_id` if it exists and belongs to `turn`'s caller.
async fn execution_of(
    app: &AppState,
    turn: &ChatTurn,
    request_id: &str,
) -> Result<Option<ExecutionRecord>, ApiError> {
    Ok(app
        .store
        .get_execution(request_id, app.clock.now())
        .await?
        .filter(|rec| rec.org == turn.scope.org && rec.subject == turn.scope.subject))
}

/// A response recorded by an earlier attempt of the same idempotent request.
fn replay(recorded: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((idempotency::REPLAYED_HEADER, "true"))
        .body(recorded)
}

/// `async: true`: queue the turn and answer 202 with its poll URL. With an
/// idempotency key the execution's id comes from the key, so a replay finds
/// the execution its first attempt queued and answers it again.
async fn accept(
    app: &AppState,
    spelling: &str,
    org: &str,
    turn: ChatTurn,
) -> Result<HttpResponse, ApiError> {
    let request_id = match &turn.idempotency {
        Some(idem) => idem.derived_id("execution"),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let agent_id = turn.agent_id.clone();
    let mut status = "queued";
    let existing = match &turn.idempotency {
        Some(idem) => match execution_of(app, &turn, &request_id).await? {
            Some(rec) if !idem.same_request(rec.fingerprint.as_deref()) => {
                return Err(SessionError::KeyReused.into());
            }
            Some(rec) => Some(rec),
            None => {
                // A synchronous request with this key committed: `replayed`
                // refuses it (422), since `async` is in the fingerprint; no
                // recorded response can match an async request.
                if sessions::replayed(app, &turn).await?.is_some() {
                    return Err(SessionError::KeyReused.into());
                }
                None
            }
        },
        None => None,
    };
    let replayed = existing.is_some();
    let session_id = match existing {
        Some(rec) => {
            if rec.status == ExecutionStatus::Pending {
                // Its first attempt may have died between recording and
                // queueing it.
                jobs::requeue(app, &rec, turn).await?;
            }
            status = match rec.status {
                ExecutionStatus::Pending => "queued",
                other => other.as_str(),
            };
            rec.session_id
        }
        None => jobs::accept(app, &request_id, turn).await?,
    };
    let agent_name = app
        .catalog()
        .agents
        .get(&agent_id)
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let mut res = HttpResponse::Accepted();
    if replayed {
        res.insert_header((idempotency::REPLAYED_HEADER, "true"));
    }
    Ok(res.json(Accepted {
        request_id: &request_id,
        agent_id: &agent_id,
        agent_name: &agent_name,
        session_id: &session_id,
        status,
        message: "Agent execution started. Poll the status endpoint for updates.",
        poll_url: format!("/api/v3/{spelling}/{org}/ai/chat/executions/{request_id}"),
    }))
}

/// The 200 body of a turn (also the `done` event of a stream).
fn response_body(reply: &sessions::ChatReply) -> String {
    let tool_results = report::quant_tool_results(&reply.tool_runs);
    serde_json::to_string(&ChatResponse {
        session_id: &reply.session_id,
        response: ChatResponseBody {
            text: &reply.reply,
            stop_reason: reply.stop_reason.as_str(),
            usage: UsageOut::new(reply.usage, false),
            tool_results: tool_results.clone(),
        },
        tool_results,
    })
    .unwrap_or_default()
}
