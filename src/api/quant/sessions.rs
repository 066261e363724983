//! The sessions API: `/api/v3/organizations/{org}/ai/sessions[/{id}[/extend]]`.
//! Everything is scoped to the organisation and the authenticated principal.

use actix_web::{HttpRequest, HttpResponse, web};

use super::error::QuantError;
use super::wire::{
    CreateSession, Created, Deleted, Detail, ExtendSession, Extended, ListQuery, Listed,
    MAX_OFFSET, OrgPath, SessionPath, TranscriptMessage, UpdateSession, Updated, check_group,
    check_metadata, check_user_id, timestamp,
};
use crate::api::{AppState, body};
use crate::cursor::{Budget, MAX_TTL};
use crate::domain::{ConversationState, HistoryItem};
use crate::error::ApiError;
use crate::sessions::{self, Scope};
use crate::store::{SessionFilter, SessionRecord};

const MAX_LIST: usize = 100;

async fn scope(req: &HttpRequest, app: &AppState, org: &str) -> Result<Scope, ApiError> {
    let p = app.catalog().auth.authenticate(req, org).await?;
    crate::limits::admit(app, req, &p, crate::limits::Work::Read).await?;
    Ok(Scope {
        org: p.tenant,
        subject: p.subject,
    })
}

fn budget(app: &AppState, rec: &SessionRecord) -> Budget {
    app.catalog()
        .agents
        .get(&rec.agent_id)
        .map(|a| a.budget)
        .unwrap_or_default()
}

/// Turn `{role, content}` messages into history, refusing roles other than user and assistant.
fn to_history<'a>(
    field: &str,
    messages: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<HistoryItem>, ApiError> {
    messages
        .enumerate()
        .map(|(i, (role, content))| match role {
            "user" => Ok(HistoryItem::user_text(content)),
            "assistant" => Ok(HistoryItem::assistant_text(content)),
            other => Err(ApiError::invalid(format!(
                "{field}[{i}].role {other:?} is not supported; use \"user\" or \"assistant\" (add system instructions with the chat `system` field)"
            ))),
        })
        .collect()
}

/// Check a new expiry against the session's age cap and the cursor's maximum lifetime.
fn check_expiry(
    app: &AppState,
    rec: &SessionRecord,
    expires_at: i64,
    now: i64,
) -> Result<(), ApiError> {
    let cap = rec.created_at + app.settings.session_max_age() as i64;
    if expires_at > cap {
        return Err(ApiError::invalid(format!(
            "the session would outlive its maximum age (sessions.max_age_seconds = {} s)",
            app.settings.session_max_age()
        )));
    }
    if expires_at > now + MAX_TTL as i64 {
        return Err(ApiError::invalid(format!(
            "a session may expire at most {MAX_TTL} s from now"
        )));
    }
    Ok(())
}

fn minutes(value: Option<i64>, default: i64, min: i64, field: &str) -> Result<i64, ApiError> {
    let v = value.unwrap_or(default);
    if !(min..=1440).contains(&v) {
        return Err(ApiError::invalid(format!("{field} must be {min} to 1440")));
    }
    Ok(v)
}

/// Start a session (optionally with a transcript to continue from).
#[utoipa::path(post, path = "/api/v3/organizations/{org}/ai/sessions", tag = "quant",
    operation_id = "quant_create_session",
    params(OrgPath),
    request_body = CreateSession,
    responses((status = 201, description = "The new session", body = Created)))]
pub async fn create(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    app: web::Data<AppState>,
) -> Result<HttpResponse, QuantError> {
    let (_, org) = path.into_inner();
    async {
        let scope = scope(&req, &app, &org).await?;
        let body: CreateSession =
            body::read_json(&req, payload, app.settings.server.max_body_bytes).await?;
        let user_id = body
            .user_id
            .ok_or_else(|| ApiError::invalid("userId is required"))?;
        check_user_id(Some(&user_id))?;
        check_group(body.session_group.as_deref())?;
        check_metadata(body.metadata.as_ref())?;
        let minutes = minutes(body.expiration_minutes, 60, 5, "expirationMinutes")?;
        let now = app.clock.now();
        let mut rec = sessions::new_record(&app, &scope, Some(user_id), now);
        rec.expires_at = now + minutes * 60;
        check_expiry(&app, &rec, rec.expires_at, now)?;
        rec.session_group = body.session_group;
        rec.metadata = body.metadata.map(serde_json::Value::Object);
        let initial = body.initial_messages.unwrap_or_default();
        let history = to_history(
            "initialMessages",
            initial
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str())),
        )?;
        if let Some(first) = initial.iter().find(|m| m.role == "user") {
            rec.title = sessions::title_of(&first.content);
        }
        if !history.is_empty() {
            let mut state = ConversationState::new(now, "");
            state.history = history;
            sessions::seal(&app, &mut rec, &mut state, Budget::default())?;
        }
        let created = Created {
            session_id: rec.id.clone(),
            status: rec.status.clone(),
            expires_at: timestamp(rec.expires_at),
            created_at: timestamp(rec.created_at),
        };
        sessions::save(&app, rec, true).await?;
        Ok(HttpResponse::Created().json(created))
    }
    .await
    .map_err(QuantError::on(&req))
}

fn parse_usize(v: Option<&str>, default: usize, field: &str) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::invalid(format!("{field} must be a non-negative integer"))),
    }
}

/// The caller's live sessions, newest first.
#[utoipa::path(get, path = "/api/v3/organizations/{org}/ai/sessions", tag = "quant",
    operation_id = "quant_list_sessions",
    params(OrgPath, ListQuery),
    responses((status = 200, description = "The sessions", body = Vec<Listed>)))]
pub async fn list(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<ListQuery>,
    app: web::Data<AppState>,
) -> Result<HttpResponse, QuantError> {
    let (_, org) = path.into_inner();
    async {
        let scope = scope(&req, &app, &org).await?;
        let q = query.into_inner();
        let limit = parse_usize(q.limit.as_deref(), 50, "limit")?;
        if limit == 0 || limit > MAX_LIST {
            return Err(ApiError::invalid(format!("limit must be 1 to {MAX_LIST}")));
        }
        let offset = parse_usize(q.offset.as_deref(), 0, "offset")?;
        if offset > MAX_OFFSET {
            return Err(ApiError::invalid(format!(
                "offset must be 0 to {MAX_OFFSET}"
            )));
        }
        check_user_id(q.user_id.as_deref())?;
        check_group(q.session_group.as_deref())?;
        let filter = SessionFilter {
            org: scope.org,
            subject: scope.subject,
            user_id: q.user_id,
            session_group: q.session_group,
            model: q.model,
            limit,
            offset,
        };
        let found = app.store.list_sessions(&filter, app.clock.now()).await?;
        let listed: Vec<Listed> = found
            .into_iter()
            .map(|s| Listed {
                id: s.id,
                title: s.title,
                model: s.model,
                created_at: timestamp(s.created_at),
                updated_at: timestamp(s.updated_at),
                user_id: s.user_id,
                expires_at: timestamp(s.expires_at),
            })
            .collect();
        Ok(HttpResponse::Ok().json(listed))
    }
    .await
    .map_err(QuantError::on(&req))
}

/// A session with its transcript.
#[utoipa::path(get, path = "/api/v3/organizations/{org}/ai/sessions/{session_id}", tag = "quant",
    operation_id = "quant_get_session",
    params(SessionPath),
    responses((status = 200, description = "The session", body = Detail)))]
pub async fn get(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    app: web::Data<AppState>,
) -> Result<HttpResponse, QuantError> {
    let (_, org, id) = path.into_inner();
    async {
        let scope = scope(&req, &app, &org).await?;
        let rec = sessions::get_owned(&app, &scope, &id).await?;
        let state = sessions::open(&app, &rec, "")?;
        let transcript = sessions::transcript(&state.history);
        Ok(HttpResponse::Ok().json(Detail {
            id: &rec.id,
            title: &rec.title,
            model: &rec.model,
            messages: transcript
                .iter()
                .map(|(role, content)| TranscriptMessage { role, content })
                .collect(),
            created_at: timestamp(rec.created_at),
            updated_at: timestamp(rec.updated_at),
            expires_at: timestamp(rec.expires_at),
            agent_id: &rec.agent_id,
            status: &rec.status,
        }))
    }
    .await
    .map_err(QuantError::on(&req))
}

/// Append messages, or change the status or metadata of a session.
#[utoipa::path(put, path = "/api/v3/organizations/{org}/ai/sessions/{session_id}", tag = "quant",
    operation_id = "quant_update_session",
    params(SessionPath),
    request_body = UpdateSession,
    responses((status = 200, description = "The updated session", body = Updated)))]
pub async fn update(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
    app: web::Data<AppState>,
) -> Result<HttpResponse, QuantError> {
    let (_, org, id) = path.into_inner();
    async {
        let scope = scope(&req, &app, &org).await?;
        let body: UpdateSession =
            body::read_json(&req, payload, app.settings.server.max_body_bytes).await?;
        let mut rec = sessions::get_owned(&app, &scope, &id).await?;
        if let Some(status) = body.status {
            if status != "active" && status != "completed" {
                return Err(ApiError::invalid(
                    "status must be \"active\" or \"completed\"",
                ));
            }
            rec.status = status;
        }
        if let Some(tokens) = body.tokens_used {
            let tokens = u64::try_from(tokens)
                .map_err(|_| ApiError::invalid("tokensUsed must not be negative"))?;
            rec.total_tokens = rec.total_tokens.saturating_add(tokens);
        }
        check_metadata(body.metadata.as_ref())?;
        if let Some(metadata) = body.metadata {
            rec.metadata = Some(serde_json::Value::Object(metadata));
        }
        let new = body.new_messages.unwrap_or_default();
        let now = app.clock.now();
        if !new.is_empty() {
            let items = to_history(
                "newMessages",
                new.iter().map(|m| (m.role.as_str(), m.content.as_str())),
            )?;
            if rec.title.is_empty()
                && let Some(first) = new.iter().find(|m| m.role == "user")
            {
                rec.title = sessions::title_of(&first.content);
            }
            let mut state = sessions::open(&app, &rec, "")?;
            state.history.extend(items);
            let budget = budget(&app, &rec);
            sessions::seal(&app, &mut rec, &mut state, budget)?;
        }
        rec.updated_at = now;
        let out = Updated {
            session_id: rec.id.clone(),
            status: rec.status.clone(),
            total_messages: rec.message_count,
            total_tokens: rec.total_tokens,
            updated_at: timestamp(rec.updated_at),
        };
        sessions::save(&app, rec, false).await?;
        Ok(HttpResponse::Ok().json(out))
    }
    .await
    .map_err(QuantError::on(&req))
}

/// Push a session's expiry back (60 minutes unless the body says otherwise).
#[utoipa::path(put, path = "/api/v3/organizations/{org}/ai/sessions/{session_id}/extend", tag = "quant",
    operation_id = "quant_extend_session",
    params(SessionPath),
    request_body(content = Option<ExtendSession>, description = "Optional: an empty body extends by 60 minutes"),
    responses((status = 200, description = "The new expiry", body = Extended)))]
pub async fn extend(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
    app: web::Data<AppState>,
) -> Result<HttpResponse, QuantError> {
    let (_, org, id) = path.into_inner();
    async {
        let scope = scope(&req, &app, &org).await?;
        let raw = body::read(&req, payload, app.settings.server.max_body_bytes).await?;
        let body: ExtendSession = if raw.iter().all(u8::is_ascii_whitespace) {
            ExtendSession {
                additional_minutes: None,
            }
        } else {
            body::parse_json(&raw)?
        };
        let minutes = minutes(body.additional_minutes, 60, 1, "additionalMinutes")?;
        let mut rec = sessions::get_owned(&app, &scope, &id).await?;
        let now = app.clock.now();
        let expires_at = rec.expires_at + minutes * 60;
        check_expiry(&app, &rec, expires_at, now)?;
        rec.expires_at = expires_at;
        if rec.sealed.is_some() {
            // Re-seal so that the stored state lives as long as the session.
            let mut state = sessions::open(&app, &rec, "")?;
            let budget = budget(&app, &rec);
            sessions::seal(&app, &mut rec, &mut state, budget)?;
        }
        let out = Extended {
            session_id: rec.id.clone(),
            expires_at: timestamp(rec.expires_at),
            message: format!("session extended by {minutes} minutes"),
        };
        sessions::save(&app, rec, false).await?;
        Ok(HttpResponse::Ok().json(out))
    }
    .await
    .map_err(QuantError::on(&req))
}

/// Delete a session.
#[utoipa::path(delete, path = "/api/v3/organizations/{org}/ai/sessions/{session_id}", tag = "quant",
    operation_id = "quant_delete_session",
    params(SessionPath),
    responses((status = 200, description = "Deleted", body = Deleted)))]
pub async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    app: web::Data<AppState>,
) -> Result<HttpResponse, QuantError> {
    let (_, org, id) = path.into_inner();
    async {
        let scope = scope(&req, &app, &org).await?;
        let rec = sessions::get_owned(&app, &scope, &id).await?;
        app.store.delete_session(&rec.id).await?;
        Ok(HttpResponse::Ok().json(Deleted {
            message: "session deleted",
        }))
    }
    .await
    .map_err(QuantError::on(&req))
}
