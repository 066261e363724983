//! Async executions: `async: true` chat turns run by a bounded pool of workers.
//!
//! Accepting a job writes a `pending` execution record and queues the job in
//! the store; a worker (on any replica sharing the store) leases it, marks it
//! `running`, runs the turn through [`sessions::chat_for_job`] while renewing
//! the lease, and records `complete` (with the sealed result) or `failed`
//! (with a readable message). Statuses only move forward. A panic in a turn
//! is caught and recorded as `failed`. If the replica dies mid-job, another
//! one reclaims the job once its lease lapses and runs it again (a worker
//! that finds its lease taken stops); after `[jobs] max_attempts` deliveries
//! it is `failed`. The turn and the job's sealed result are written to the
//! session in one compare-and-set, so a re-run either starts from the same
//! stored state as the attempt it replaces (the conversation id and turn,
//! and with them tool idempotency keys, are stable across attempts) or finds
//! the turn committed and completes with its result. Job inputs and results
//! are sealed with the cursor keys, bound to the organisation, the execution
//! and the caller.

use std::sync::Arc;

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::app::AgentError;
use crate::app::AppState;
use crate::cursor::CursorContext;
use crate::cursor::CursorError;
use crate::error::{ApiError, ErrorCode};
use crate::sessions::SessionError;

/// Errors of the async execution engine; the Quant facade renders them.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue already holds `max_queued` jobs.
    #[error("too many queued async requests")]
    QueueFull,
    /// The message and system prompt do not fit in one sealed blob.
    #[error("the async input is too large")]
    InputTooLarge,
    /// The execution record (or its result) is gone or expired.
    #[error("execution not found")]
    NotFound,
    /// A stored input or result does not open or decode: a fault on our side.
    #[error("a stored execution blob could not be read: {0}")]
    Unreadable(String),
    /// The turn was committed by an earlier attempt whose result a later
    /// execution's replaced.
    #[error(
        "the turn was committed by an earlier attempt, but its result was replaced by a later execution's"
    )]
    ResultLost,
}

impl JobError {
    fn unreadable(what: &str, e: impl std::fmt::Display) -> Self {
        JobError::Unreadable(format!("{what}: {e}"))
    }

    /// A stored blob that failed to open: expired means gone.
    fn stored(what: &str, e: CursorError) -> Self {
        match e {
            CursorError::Expired => JobError::NotFound,
            other => JobError::unreadable(what, other),
        }
    }
}
use crate::sessions::{self, ChatTurn, Scope};
use crate::store::{ExecutionRecord, ExecutionStatus, Lease, StoreError};

/// A queued turn. Its input (message and system prompt) is sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub request_id: String,
    pub org: String,
    pub subject: String,
    pub user_id: Option<String>,
    pub agent_id: String,
    pub session_id: String,
    pub sealed_input: String,
    /// The token buckets the turn's model usage is charged to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<crate::limits::TokenBucket>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JobInput {
    message: String,
    system: Option<String>,
}

/// The result of a complete execution, as polling shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    pub text: String,
    pub stop_reason: String,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    /// The turn's server tool runs (the API shape renders them).
    #[serde(default)]
    pub tool_runs: Vec<crate::tools::ToolRun>,
    /// Results sealed by earlier versions carried the Quant rendering itself.
    #[serde(default, rename = "toolExecutions", skip_serializing)]
    pub legacy_tool_executions: Vec<serde_json::Value>,
}

/// The AAD agent slot of an execution's sealed blobs.
fn purpose(request_id: &str) -> String {
    format!("execution/{request_id}")
}

/// This replica's job workers.
#[derive(Debug, Default, Clone)]
pub struct Workers {
    handles: Vec<tokio::task::AbortHandle>,
}

impl Workers {
    /// Stop every worker at once, abandoning (not finishing) their jobs; a
    /// shared store hands those jobs to another replica once their leases lapse.
    pub fn abort(&self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

/// Start `[jobs] workers` tasks taking jobs from the store's queue, each also
/// reclaiming jobs whose lease lapsed.
pub fn start_workers(app: Arc<AppState>) -> Workers {
    let replica = format!("replica-{}", uuid::Uuid::new_v4().simple());
    let handles = (0..app.settings.jobs.workers)
        .map(|i| {
            let app = app.clone();
            // One consumer per worker: a lease is held by the worker running
            // it, so a sibling that reclaims it is told apart from its holder.
            let consumer = format!("{replica}-w{i}");
            tokio::spawn(async move { worker(app, consumer, i).await }).abort_handle()
        })
        .collect();
    Workers { handles }
}

fn lease_time(app: &AppState) -> Duration {
    Duration::from_secs(app.settings.jobs.lease_seconds)
}

async fn worker(app: Arc<AppState>, consumer: String, index: usize) {
    let lease = lease_time(&app);
    // Workers take turns scanning for lapsed leases.
    let mut next_reclaim = Instant::now() + lease / 4 * (index as u32 + 1);
    loop {
        let taken = if Instant::now() >= next_reclaim {
            next_reclaim = Instant::now() + lease / 2;
            app.store.reclaim(&consumer, lease).await
        } else {
            app.store.next_job(&consumer, Duration::from_secs(1)).await
        };
        match taken {
            Ok(Some(l)) => process(&app, &consumer, l).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "job queue unavailable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Run one leased job, keeping its lease renewed, and ack it whatever the
/// outcome. If the lease is lost (this worker stalled past it and another
/// replica reclaimed the job), the attempt stops at once and leaves the job
/// to its new holder.
async fn process(app: &AppState, consumer: &str, lease: Lease) {
    let job: Job = match serde_json::from_str(&lease.payload) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(error = %e, "unreadable job dropped");
            let _ = app.store.ack(consumer, &lease).await;
            return;
        }
    };
    let span = tracing::info_span!("job", request_id = %job.request_id, attempt = lease.deliveries);
    async {
        tracing::info!("job started");
        let max = app.settings.jobs.max_attempts;
        if lease.deliveries > u64::from(max) {
            // The last attempt may have committed the turn before dying.
            match sessions::committed_job(app, &job.session_id, &job.request_id).await {
                Ok(Some(Some(result))) => {
                    set_status(app, &job, ExecutionStatus::Complete, Some(result), None).await;
                }
                _ => {
                    let msg = format!("the execution was abandoned after {max} attempt(s)");
                    set_status(
                        app,
                        &job,
                        ExecutionStatus::Failed,
                        None,
                        Some((msg, ErrorCode::Internal.as_str().to_owned())),
                    )
                    .await;
                }
            }
        } else if is_finished(app, &job).await {
            tracing::info!("job already finished by an earlier attempt");
        } else {
            let renew_every = lease_time(app) / 3;
            let work = run(app, job.clone());
            tokio::pin!(work);
            loop {
                tokio::select! {
                    () = &mut work => break,
                    () = tokio::time::sleep(renew_every) => {
                        match app.store.renew(consumer, &lease).await {
                            Ok(()) => {}
                            Err(StoreError::Conflict) => {
                                tracing::warn!("the job's lease was taken over by another worker; stopping this attempt");
                                return;
                            }
                            Err(e) => tracing::warn!(error = %e, "could not renew the job lease"),
                        }
                    }
                }
            }
        }
        match app.store.ack(consumer, &lease).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                tracing::info!("the job was taken over by another worker, which acks it");
            }
            Err(e) => tracing::warn!(error = %e, "could not ack the job"),
        }
    }
    .instrument(span)
    .await
}

async fn is_finished(app: &AppState, job: &Job) -> bool {
    matches!(
        app.store.get_execution(&job.request_id, app.clock.now()).await,
        Ok(Some(rec)) if matches!(rec.status, ExecutionStatus::Complete | ExecutionStatus::Failed)
    )
}

/// Validate an async chat, create its session if needed, record it `pending`
/// and queue it. Returns the session id.
pub async fn accept(app: &AppState, request_id: &str, turn: ChatTurn) -> Result<String, JobError> {
    let now = app.clock.now();
    if app.catalog().agents.get(&turn.agent_id).is_none() {
        return Err(AgentError::NotFound(turn.agent_id).into());
    }
    let (session_id, created) = match &turn.session_id {
        Some(id) => (sessions::get_for_chat(app, &turn, id).await?.id, false),
        None => {
            let mut rec = sessions::new_record(app, &turn.scope, turn.user_id.clone(), now);
            if let Some(id) = sessions::session_id_of(&turn) {
                rec.id = id;
            }
            let id = rec.id.clone();
            match sessions::save(app, rec, true).await {
                Ok(()) => (id, true),
                // An idempotent request's earlier attempt created the session
                // (from the same key) and stopped before queueing: use it.
                Err(SessionError::Store(StoreError::Exists)) if turn.idempotency.is_some() => {
                    let rec = sessions::get_for_chat(app, &turn, &id).await?;
                    if rec.jobs.iter().any(|j| j == request_id) {
                        // It ran, and its record has expired since: never again.
                        return Err(SessionError::ResponseGone.into());
                    }
                    (rec.id, false)
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let expires = now + app.settings.jobs.ttl_seconds as i64;
    let record = ExecutionRecord {
        id: request_id.to_owned(),
        org: turn.scope.org.clone(),
        subject: turn.scope.subject.clone(),
        agent_id: turn.agent_id.clone(),
        session_id: session_id.clone(),
        status: ExecutionStatus::Pending,
        created_at: now,
        updated_at: now,
        expires_at: expires,
        result: None,
        error: None,
        fingerprint: turn
            .idempotency
            .as_ref()
            .map(|i| i.fingerprint().to_owned()),
    };
    // The input is sealed before anything is written: one too large is
    // refused with nothing left behind but a new session, removed below.
    let job = match job_of(app, request_id, turn, &session_id, expires) {
        Ok(job) => job,
        Err(e) => {
            if created {
                let _ = app.store.delete_session(&session_id).await;
            }
            return Err(e);
        }
    };
    app.store.put_execution(record, now).await?;
    if let Err(e) = enqueue(app, &job).await {
        let _ = app.store.delete_execution(request_id).await;
        if created {
            let _ = app.store.delete_session(&session_id).await;
        }
        return Err(e);
    }
    Ok(session_id)
}

/// Queue again an execution accepted earlier that is still pending, for a
/// replay of its idempotent request: its replica may have died after
/// recording it and before queueing it. If it was queued, the second
/// delivery finds the turn committed (or the record finished) and runs
/// nothing twice; at worst two workers take both at once and the model is
/// called twice for one committed turn.
pub async fn requeue(
    app: &AppState,
    rec: &ExecutionRecord,
    turn: ChatTurn,
) -> Result<(), JobError> {
    let job = job_of(app, &rec.id, turn, &rec.session_id, rec.expires_at)?;
    enqueue(app, &job).await
}

/// The queued form of `turn`: its input sealed to the execution.
fn job_of(
    app: &AppState,
    request_id: &str,
    turn: ChatTurn,
    session_id: &str,
    expires: i64,
) -> Result<Job, JobError> {
    let subject = sessions::narrowed_subject(&turn.scope.subject, turn.user_id.as_deref());
    let purpose = purpose(request_id);
    let ctx = CursorContext {
        project: &turn.scope.org,
        agent: &purpose,
        subject: &subject,
    };
    let input = serde_json::to_vec(&JobInput {
        message: turn.message,
        system: turn.system,
    })
    .map_err(|e| JobError::unreadable("job input", e))?;
    let sealed_input = app
        .codec
        .seal_blob(&input, &ctx, expires as u64)
        .map_err(|e| match e {
            CursorError::ConversationTooLarge => JobError::InputTooLarge,
            other => JobError::unreadable("job input", other),
        })?;
    Ok(Job {
        request_id: request_id.to_owned(),
        org: turn.scope.org,
        subject: turn.scope.subject,
        user_id: turn.user_id,
        agent_id: turn.agent_id,
        session_id: session_id.to_owned(),
        sealed_input,
        tokens: turn
            .meter
            .as_ref()
            .map(|m| m.buckets().to_vec())
            .unwrap_or_default(),
    })
}

async fn enqueue(app: &AppState, job: &Job) -> Result<(), JobError> {
    let payload = serde_json::to_string(job).map_err(|e| JobError::unreadable("job", e))?;
    app.store
        .enqueue(payload, app.settings.jobs.max_queued)
        .await
        .map_err(|e| match e {
            StoreError::Full => JobError::QueueFull,
            other => other.into(),
        })
}

/// Move the execution to `status`, forward only: the store refuses to
/// replace a finished record or to move a status back, atomically, so a
/// reclaimed attempt racing the one it replaced cannot undo a completion.
async fn set_status(
    app: &AppState,
    job: &Job,
    status: ExecutionStatus,
    result: Option<String>,
    error: Option<(String, String)>,
) {
    let now = app.clock.now();
    let Ok(Some(mut rec)) = app.store.get_execution(&job.request_id, now).await else {
        tracing::warn!(request_id = %job.request_id, "execution record vanished");
        return;
    };
    if !rec.status.may_become(status) {
        return;
    }
    rec.status = status;
    rec.updated_at = now;
    rec.result = result;
    rec.error = error;
    match app.store.advance_execution(rec, now).await {
        Ok(true) => {}
        Ok(false) => tracing::info!(
            status = status.as_str(),
            "execution already moved on; status not recorded"
        ),
        Err(e) => {
            tracing::error!(request_id = %job.request_id, error = %e, "could not record execution status")
        }
    }
}

async fn run(app: &AppState, job: Job) {
    let span = tracing::info_span!("job", request_id = %job.request_id);
    run_in_span(app, job).instrument(span).await
}

async fn run_in_span(app: &AppState, job: Job) {
    set_status(app, &job, ExecutionStatus::Running, None, None).await;
    let outcome = std::panic::AssertUnwindSafe(execute(app, &job))
        .catch_unwind()
        .await;
    match outcome {
        Ok(Ok(result)) => {
            set_status(app, &job, ExecutionStatus::Complete, Some(result), None).await
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "async execution failed");
            // Recorded as the client will see it: a message and a machine code.
            let e = ApiError::from(e);
            set_status(
                app,
                &job,
                ExecutionStatus::Failed,
                None,
                Some((e.message, e.code.as_str().to_owned())),
            )
            .await
        }
        Err(_) => {
            tracing::error!("async execution panicked");
            let err = (
                "internal error while running the turn".to_owned(),
                ErrorCode::Internal.as_str().to_owned(),
            );
            set_status(app, &job, ExecutionStatus::Failed, None, Some(err)).await
        }
    }
}

async fn execute(app: &AppState, job: &Job) -> Result<String, JobError> {
    // An earlier attempt may have committed the turn and died before
    // recording the execution complete: never run the turn twice.
    match sessions::committed_job(app, &job.session_id, &job.request_id).await? {
        Some(Some(result)) => {
            tracing::info!(
                "the turn was committed by an earlier attempt; completing with its result"
            );
            return Ok(result);
        }
        Some(None) => return Err(JobError::ResultLost),
        None => {}
    }
    let now = app.clock.now();
    let subject = sessions::narrowed_subject(&job.subject, job.user_id.as_deref());
    let purpose = purpose(&job.request_id);
    let ctx = CursorContext {
        project: &job.org,
        agent: &purpose,
        subject: &subject,
    };
    let input: JobInput = serde_json::from_slice(
        &app.codec
            .open_blob(&job.sealed_input, &ctx, now)
            .map_err(|e| JobError::stored("execution input", e))?,
    )
    .map_err(|e| JobError::unreadable("job input", e))?;
    let rec_ctx = CursorContext {
        project: &job.org,
        agent: &purpose,
        subject: &job.subject,
    };
    let seal_result = |reply: &sessions::ChatReply| -> Result<String, String> {
        let result = serde_json::to_vec(&JobResult {
            text: reply.reply.clone(),
            stop_reason: reply.stop_reason.as_str().to_owned(),
            input_tokens: reply.usage.input_tokens,
            output_tokens: reply.usage.output_tokens,
            cache_read_tokens: reply.usage.cache_read_tokens,
            cache_write_tokens: reply.usage.cache_write_tokens,
            tool_runs: reply.tool_runs.clone(),
            legacy_tool_executions: Vec::new(),
        })
        .map_err(|e| format!("job result: {e}"))?;
        let expires = (app.clock.now() + app.settings.jobs.ttl_seconds as i64) as u64;
        app.codec
            .seal_blob(&result, &rec_ctx, expires)
            .map_err(|e| format!("job result: {e}"))
    };
    let sealed = sessions::chat_for_job(
        app,
        ChatTurn {
            scope: Scope {
                org: job.org.clone(),
                subject: job.subject.clone(),
            },
            user_id: job.user_id.clone(),
            agent_id: job.agent_id.clone(),
            session_id: Some(job.session_id.clone()),
            message: input.message,
            system: input.system,
            meter: crate::limits::Meter::new(app.counters.clone(), job.tokens.clone()),
            // The execution's own id makes its commit exactly-once.
            idempotency: None,
        },
        sessions::JobCommit {
            request_id: &job.request_id,
            seal_result: &seal_result,
        },
    )
    .await;
    match sealed {
        Ok((_, sealed)) => Ok(sealed),
        // Another attempt (the one this one replaced, stalled rather than
        // dead) wrote the session first: if that write was this job's turn,
        // its result is the execution's.
        Err(SessionError::Store(StoreError::Conflict)) => {
            match sessions::committed_job(app, &job.session_id, &job.request_id).await? {
                Some(Some(result)) => Ok(result),
                Some(None) => Err(JobError::ResultLost),
                None => Err(SessionError::Store(StoreError::Conflict).into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Open a complete execution's sealed result.
pub fn open_result(
    app: &AppState,
    rec: &ExecutionRecord,
    sealed: &str,
) -> Result<JobResult, JobError> {
    let purpose = purpose(&rec.id);
    let ctx = CursorContext {
        project: &rec.org,
        agent: &purpose,
        subject: &rec.subject,
    };
    let bytes = app
        .codec
        .open_blob(sealed, &ctx, app.clock.now())
        .map_err(|e| JobError::stored("execution result", e))?;
    serde_json::from_slice(&bytes).map_err(|e| JobError::unreadable("job result", e))
}
