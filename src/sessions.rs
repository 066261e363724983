//! Quant sessions: a conversation whose latest sealed state lives in the store
//! instead of travelling to the client. The same engine as cursors: the state
//! is opened, a turn runs, the new state is sealed (so it is encrypted at rest)
//! and written back with compare-and-set.

use crate::app::{AgentError, AppState};
use crate::cursor::{Budget, CursorContext, CursorError, MAX_TTL};
use crate::domain::{AssistantPart, ConversationState, HistoryItem, UserPart};
use crate::domain::{StopReason, Usage};
use crate::runtime::{RuntimeError, TurnContext, TurnInput, TurnOutcome, run_to_end, run_turn};
use crate::store::{SessionRecord, StoreError};
use crate::tools::ToolRun;

/// Errors of the sessions engine; the facades render them.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such live session for this caller, user and agent (or its stored
    /// state has expired).
    #[error("session not found")]
    NotFound,
    /// The stored state exists but does not open: a fault on our side.
    #[error("the stored session state could not be read: {0}")]
    Unreadable(CursorError),
    /// Sealing the new state failed (it grew too large) or the conversation is too old.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Turn(#[from] RuntimeError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// An async execution's result could not be sealed.
    #[error("the execution result could not be sealed: {0}")]
    Result(String),
    /// The request's `Idempotency-Key` was committed by a request with
    /// other content.
    #[error("the idempotency key was used for another request")]
    KeyReused,
    /// The request's `Idempotency-Key` was committed, and its response is
    /// no longer kept (a later turn's replaced it, or it expired).
    #[error("the request was already applied; its response is no longer kept")]
    ResponseGone,
}

const TITLE_CHARS: usize = 80;

/// The AAD subject of a session: the principal's subject, narrowed by `userId`.
pub fn narrowed_subject(subject: &str, user_id: Option<&str>) -> String {
    match user_id {
        Some(u) => format!("{subject}\u{0}user:{u}"),
        None => subject.to_owned(),
    }
}

/// Who is asking for a session.
#[derive(Debug, Clone)]
pub struct Scope {
    pub org: String,
    pub subject: String,
}

/// One chat turn on the Quant surface.
#[derive(Debug, Clone)]
pub struct ChatTurn {
    pub scope: Scope,
    pub user_id: Option<String>,
    pub agent_id: String,
    pub session_id: Option<String>,
    pub message: String,
    pub system: Option<String>,
    /// Charges the turn's model tokens to its caller's rate limits.
    pub meter: Option<crate::limits::Meter>,
    /// The request's `Idempotency-Key`, scoped and fingerprinted.
    pub idempotency: Option<crate::idempotency::Idempotency>,
}

impl ChatTurn {
    /// Who asks for which session with which key, without the message, the
    /// system prompt or the meter: what a replay check needs after the turn
    /// itself has taken them.
    pub fn without_content(&self) -> ChatTurn {
        ChatTurn {
            scope: self.scope.clone(),
            user_id: self.user_id.clone(),
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone(),
            message: String::new(),
            system: None,
            meter: None,
            idempotency: self.idempotency.clone(),
        }
    }
}

/// The session id a turn runs on: the one it names, else (for a new
/// session) the one derived from its idempotency key, if any.
pub fn session_id_of(turn: &ChatTurn) -> Option<String> {
    turn.session_id
        .clone()
        .or_else(|| turn.idempotency.as_ref().map(|i| i.derived_id("session")))
}

#[derive(Debug)]
pub struct ChatReply {
    pub session_id: String,
    pub reply: String,
    pub stop_reason: StopReason,
    pub usage: Usage,
    pub tool_runs: Vec<ToolRun>,
}

/// A fresh, unsaved session record.
pub fn new_record(
    app: &AppState,
    scope: &Scope,
    user_id: Option<String>,
    now: i64,
) -> SessionRecord {
    SessionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        org: scope.org.clone(),
        agent_id: String::new(),
        subject: scope.subject.clone(),
        user_id,
        session_group: None,
        metadata: None,
        title: String::new(),
        model: String::new(),
        status: "active".into(),
        created_at: now,
        updated_at: now,
        expires_at: now + app.settings.sessions.ttl_seconds as i64,
        message_count: 0,
        total_tokens: 0,
        sealed: None,
        jobs: Vec::new(),
        last_job: None,
        keys: Vec::new(),
        last_response: None,
        version: 0,
    }
}

/// A live session owned by `scope` (any user of that principal), else 404.
pub async fn get_owned(
    app: &AppState,
    scope: &Scope,
    id: &str,
) -> Result<SessionRecord, SessionError> {
    let rec = app
        .store
        .get_session(id, app.clock.now())
        .await?
        .ok_or(SessionError::NotFound)?;
    if rec.org != scope.org || rec.subject != scope.subject {
        return Err(SessionError::NotFound);
    }
    Ok(rec)
}

/// A live session this chat may continue (same org, principal, user and agent), else 404.
pub async fn get_for_chat(
    app: &AppState,
    turn: &ChatTurn,
    id: &str,
) -> Result<SessionRecord, SessionError> {
    let rec = get_owned(app, &turn.scope, id).await?;
    if rec.user_id != turn.user_id || !(rec.agent_id.is_empty() || rec.agent_id == turn.agent_id) {
        return Err(SessionError::NotFound);
    }
    Ok(rec)
}

/// The AAD agent slot of a session's stored state: the session's id and
/// agent, so that one session's state never opens as another record's.
fn slot(rec: &SessionRecord) -> String {
    format!("session:{}:{}", rec.id, rec.agent_id)
}

/// The context a session's blobs are sealed under: its organisation, a
/// slot naming the record, and the (narrowed) subject.
fn context<'a>(org: &'a str, slot: &'a str, subject: &'a str) -> CursorContext<'a> {
    CursorContext {
        project: org,
        agent: slot,
        subject,
    }
}

/// The conversation stored in `rec` (empty if nothing was said yet).
pub fn open(
    app: &AppState,
    rec: &SessionRecord,
    cfg: &str,
) -> Result<ConversationState, SessionError> {
    let now = app.clock.now();
    match &rec.sealed {
        None => Ok(ConversationState::new(rec.created_at.min(now), cfg)),
        Some(token) => {
            let subject = narrowed_subject(&rec.subject, rec.user_id.as_deref());
            let slot = slot(rec);
            let opened =
                match app
                    .codec
                    .open_stored(token, &context(&rec.org, &slot, &subject), now)
                {
                    // States stored before the slot held the session id (the
                    // plain agent id then) are still read until they expire.
                    Err(CursorError::Invalid(crate::cursor::InvalidReason::Authentication)) => {
                        let legacy = context(&rec.org, &rec.agent_id, &subject);
                        app.codec.open_stored(token, &legacy, now)
                    }
                    other => other,
                };
            opened.map_err(|e| {
                tracing::warn!(session = %rec.id, reason = %e, "stored session state refused");
                match e {
                    CursorError::Expired => SessionError::NotFound,
                    CursorError::ConversationExpired => SessionError::Cursor(e),
                    other => SessionError::Unreadable(other),
                }
            })
        }
    }
}

/// Seal `state` into `rec`, expiring with the session (capped at the cursor maximum).
pub fn seal(
    app: &AppState,
    rec: &mut SessionRecord,
    state: &mut ConversationState,
    budget: Budget,
) -> Result<(), SessionError> {
    let now = app.clock.now();
    let ttl = (rec.expires_at - now).clamp(1, MAX_TTL as i64) as u64;
    let subject = narrowed_subject(&rec.subject, rec.user_id.as_deref());
    let slot = slot(rec);
    let sealed =
        app.codec
            .seal_stored(state, budget, &context(&rec.org, &slot, &subject), now, ttl)?;
    rec.message_count = state
        .history
        .iter()
        .filter(|i| matches!(i, HistoryItem::User { .. } | HistoryItem::Assistant { .. }))
        .count() as u64;
    rec.sealed = Some(sealed.token);
    rec.updated_at = now;
    Ok(())
}

/// Write `rec` back: insert when `new`, else compare-and-set on its version.
pub async fn save(app: &AppState, rec: SessionRecord, new: bool) -> Result<(), SessionError> {
    let now = app.clock.now();
    if new {
        app.store.create_session(rec, now).await?;
    } else {
        let version = rec.version;
        app.store.replace_session(rec, version, now).await?;
    }
    Ok(())
}

/// Slide the session's expiry on activity, never past its absolute age cap
/// and never shortening an explicitly longer expiry.
fn slide(app: &AppState, rec: &mut SessionRecord, now: i64) {
    let cap = rec.created_at + app.settings.session_max_age() as i64;
    let slid = (now + app.settings.sessions.ttl_seconds as i64).min(cap);
    rec.expires_at = rec.expires_at.max(slid);
}

pub fn title_of(text: &str) -> String {
    text.chars().take(TITLE_CHARS).collect()
}

/// Find (or start) the session and run one turn on it, without storing
/// anything yet: [`finish`] commits the outcome.
pub async fn run(app: &AppState, turn: ChatTurn) -> Result<(Prepared, TurnOutcome), SessionError> {
    let (prepared, cx, conversation, input) = prepare(app, turn, false).await?;
    let outcome = run_to_end(run_turn(cx, conversation, input))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "turn failed");
            SessionError::from(e)
        })?;
    Ok((prepared, outcome))
}

/// An async execution committing with its turn: its id, and how to seal
/// its result from the reply. The session write records both, so the turn
/// and the execution's result are one write.
pub struct JobCommit<'a> {
    pub request_id: &'a str,
    pub seal_result: &'a (dyn Fn(&ChatReply) -> Result<String, String> + Sync),
}

/// One turn on a session ([`run`], then [`finish`]) committing `job` with
/// it; returns the reply and the sealed result.
pub async fn chat_for_job(
    app: &AppState,
    turn: ChatTurn,
    job: JobCommit<'_>,
) -> Result<(ChatReply, String), SessionError> {
    let (prepared, outcome) = run(app, turn).await?;
    let mut sealed = None;
    let reply = finish(app, prepared, outcome, Commit::Job(&job, &mut sealed)).await?;
    let sealed = sealed.ok_or_else(|| SessionError::Result("not sealed".into()))?;
    Ok((reply, sealed))
}

/// Whether execution `request_id` already committed its turn into session
/// `id`: `Some(result)` with its sealed result when it is the latest one,
/// `Some(None)` when it committed but a later execution's result replaced its own.
pub async fn committed_job(
    app: &AppState,
    id: &str,
    request_id: &str,
) -> Result<Option<Option<String>>, SessionError> {
    let Some(rec) = app.store.get_session(id, app.clock.now()).await? else {
        return Ok(None);
    };
    if !rec.jobs.iter().any(|j| j == request_id) {
        return Ok(None);
    }
    Ok(Some(
        rec.last_job
            .filter(|(j, _)| j == request_id)
            .map(|(_, result)| result),
    ))
}

/// The slot a committed idempotent turn's response is sealed under: the
/// session's id, so that it opens for that session only.
fn response_slot(session_id: &str) -> String {
    format!("idempotent-response:{session_id}")
}

/// Seal a synchronous turn's response for replays of its idempotent request;
/// kept for a day ([`MAX_TTL`]) in the session record.
pub fn seal_response(
    app: &AppState,
    turn: &ChatTurn,
    session_id: &str,
    body: &[u8],
) -> Result<String, String> {
    let subject = narrowed_subject(&turn.scope.subject, turn.user_id.as_deref());
    let slot = response_slot(session_id);
    let exp = (app.clock.now() + MAX_TTL as i64) as u64;
    app.codec
        .seal_blob(body, &context(&turn.scope.org, &slot, &subject), exp)
        .map_err(|e| format!("response: {e}"))
}

/// If `turn` carries an idempotency key that already committed, the
/// response recorded with it (the request must not run again); `None` when
/// it never committed (run it).
pub async fn replayed(app: &AppState, turn: &ChatTurn) -> Result<Option<Vec<u8>>, SessionError> {
    let (Some(idem), Some(id)) = (&turn.idempotency, session_id_of(turn)) else {
        return Ok(None);
    };
    let now = app.clock.now();
    let Some(rec) = app.store.get_session(&id, now).await? else {
        return Ok(None);
    };
    let owned = rec.org == turn.scope.org
        && rec.subject == turn.scope.subject
        && rec.user_id == turn.user_id
        && (rec.agent_id.is_empty() || rec.agent_id == turn.agent_id);
    if !owned {
        // Not this caller's session: the turn itself reports it as not found.
        return Ok(None);
    }
    match idem.seen(&rec.keys, now) {
        // The session this key names for a new conversation exists, and
        // holds no live mark of it: a synchronous request with this key
        // committed over a day ago (or its mark was pushed out). An async
        // one's first attempt may have created it before queueing: it is
        // used again.
        crate::idempotency::Seen::No if turn.session_id.is_none() && !idem.run_async => {
            Err(SessionError::ResponseGone)
        }
        crate::idempotency::Seen::No => Ok(None),
        crate::idempotency::Seen::Different => Err(SessionError::KeyReused),
        crate::idempotency::Seen::Same => {
            let mark = idem.mark();
            let Some((_, sealed)) = rec.last_response.as_ref().filter(|(m, _)| *m == mark) else {
                return Err(SessionError::ResponseGone);
            };
            let subject = narrowed_subject(&rec.subject, rec.user_id.as_deref());
            let slot = response_slot(&rec.id);
            match app
                .codec
                .open_blob(sealed, &context(&rec.org, &slot, &subject), now)
            {
                Ok(body) => Ok(Some(body.to_vec())),
                Err(CursorError::Expired) => Err(SessionError::ResponseGone),
                Err(e) => Err(SessionError::Unreadable(e)),
            }
        }
    }
}

/// A session turn ready to run: the record to update once it is done.
#[derive(Debug)]
pub struct Prepared {
    rec: SessionRecord,
    new: bool,
    message: String,
    agent: std::sync::Arc<crate::agent::AgentSpec>,
}

/// Find (or start) the session and build the turn's input.
pub async fn prepare(
    app: &AppState,
    turn: ChatTurn,
    streaming: bool,
) -> Result<(Prepared, TurnContext, ConversationState, TurnInput), SessionError> {
    let mut cx = app.turn_context(&turn.agent_id)?;
    cx.meter = turn.meter.clone();
    let agent = cx.agent.clone();
    let now = app.clock.now();
    let (rec, new) = match &turn.session_id {
        Some(id) => (get_for_chat(app, &turn, id).await?, false),
        None => {
            let mut rec = new_record(app, &turn.scope, turn.user_id.clone(), now);
            if let Some(id) = session_id_of(&turn) {
                // Derived from the idempotency key: a replay of this request
                // finds the session its first attempt created.
                rec.id = id;
            }
            (rec, true)
        }
    };
    let conversation = open(app, &rec, &agent.cfg_hash)?;
    let input = TurnInput {
        messages: vec![HistoryItem::user_text(turn.message.clone())],
        system_extra: turn.system,
        client_tools: Vec::new(),
        tool_results: Vec::new(),
        approved: Vec::new(),
        can_confirm: false,
        streaming,
    };
    Ok((
        Prepared {
            rec,
            new,
            message: turn.message,
            agent,
        },
        cx,
        conversation,
        input,
    ))
}

/// A synchronous turn carrying an idempotency key: its mark, and how to
/// seal its response for replays.
pub struct KeyCommit<'a> {
    pub mark: String,
    pub seal_response: &'a (dyn Fn(&ChatReply) -> Result<String, String> + Sync),
}

/// What commits with a turn besides its state.
pub enum Commit<'a, 'b> {
    Nothing,
    /// An async execution; its sealed result is written to the `Option`.
    Job(&'a JobCommit<'b>, &'a mut Option<String>),
    /// A keyed synchronous turn.
    Key(KeyCommit<'b>),
}

/// Seal the turn's new state into the session and write it back
/// (compare-and-set), with what `commit` says in the same write.
pub async fn finish(
    app: &AppState,
    prepared: Prepared,
    outcome: TurnOutcome,
    commit: Commit<'_, '_>,
) -> Result<ChatReply, SessionError> {
    let Prepared {
        mut rec,
        new,
        message,
        agent,
    } = prepared;
    let TurnOutcome {
        mut state,
        stop_reason,
        usage,
        reply,
        tool_runs,
    } = outcome;
    let now = app.clock.now();
    rec.agent_id.clone_from(&agent.id);
    rec.model.clone_from(&agent.model);
    if rec.title.is_empty() {
        rec.title = title_of(&message);
    }
    rec.total_tokens = rec.total_tokens.saturating_add(
        usage
            .input_tokens
            .unwrap_or(0)
            .saturating_add(usage.output_tokens.unwrap_or(0)),
    );
    slide(app, &mut rec, now);
    seal(app, &mut rec, &mut state, agent.budget)?;
    let reply = ChatReply {
        session_id: rec.id.clone(),
        reply,
        stop_reason,
        usage,
        tool_runs,
    };
    match commit {
        Commit::Nothing => {}
        Commit::Job(job, sealed) => {
            if rec.jobs.iter().any(|j| j == job.request_id) {
                // Another delivery of this execution committed its turn after
                // this one checked and before it read the session: the
                // caller completes with that delivery's result.
                return Err(SessionError::Store(crate::store::StoreError::Conflict));
            }
            let result = (job.seal_result)(&reply).map_err(SessionError::Result)?;
            rec.jobs.push(job.request_id.to_owned());
            let excess = rec.jobs.len().saturating_sub(crate::store::MAX_JOB_MARKS);
            rec.jobs.drain(..excess);
            rec.last_job = Some((job.request_id.to_owned(), result.clone()));
            *sealed = Some(result);
        }
        Commit::Key(key) => {
            rec.keys
                .retain(|(_, at)| now - at < crate::idempotency::KEEP_SECONDS);
            rec.keys.push((key.mark.clone(), now));
            let excess = rec.keys.len().saturating_sub(crate::store::MAX_KEY_MARKS);
            rec.keys.drain(..excess);
            // A response that cannot be sealed (over 1 MiB) is not kept: the
            // turn still commits, and a replay is told it was applied.
            rec.last_response = match (key.seal_response)(&reply) {
                Ok(sealed) => Some((key.mark, sealed)),
                Err(reason) => {
                    tracing::warn!(%reason, "the response is not kept for replays of its idempotency key");
                    None
                }
            };
        }
    }
    save(app, rec, new).await?;
    Ok(reply)
}

/// `{role, content}` view of a history, as the sessions API shows it.
pub fn transcript(history: &[HistoryItem]) -> Vec<(&'static str, String)> {
    history
        .iter()
        .filter_map(|item| match item {
            HistoryItem::User { parts } => Some((
                "user",
                parts
                    .iter()
                    .map(|p| match p {
                        UserPart::Text { text } => text.as_str(),
                        UserPart::Image { .. } => "[image]",
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            )),
            HistoryItem::Assistant { parts, .. } => Some((
                "assistant",
                parts
                    .iter()
                    .map(|AssistantPart::Text { text }| text.as_str())
                    .collect::<String>(),
            )),
            HistoryItem::ToolResult { content, .. } => Some(("tool", content.clone())),
            HistoryItem::Reasoning { .. } => None,
        })
        .collect()
}
