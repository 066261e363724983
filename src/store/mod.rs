//! Shared state that outlives a request: Quant sessions (the latest sealed
//! conversation state plus plaintext metadata) and async execution records.
//! Backends implement [`Store`]; `memory` is embedded and bounded. Conversation
//! state and job payloads are always sealed (cv1) before they reach a store.

pub mod memory;
pub mod rate;

pub use rate::{Bucket, Tokens};
pub mod redis;

use serde::{Deserialize, Serialize};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("the record changed since it was read")]
    Conflict,
    #[error("a record with this id already exists")]
    Exists,
    #[error("the store is full")]
    Full,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// A Quant session: metadata in plaintext, the conversation sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub org: String,
    /// The agent the session is bound to; empty until its first chat.
    pub agent_id: String,
    /// The authenticated principal's subject (not narrowed by `user_id`).
    pub subject: String,
    pub user_id: Option<String>,
    pub session_group: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub title: String,
    pub model: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub message_count: u64,
    pub total_tokens: u64,
    /// The cv1 token of the conversation state; `None` before anything was said.
    pub sealed: Option<String>,
    /// Async executions whose turn was committed into this session, oldest
    /// first (at most [`MAX_JOB_MARKS`]): a re-run of one of them (its worker
    /// died before recording it complete) must not run the turn again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// The latest committed execution's id and sealed result, written with
    /// the turn, so that such a re-run completes with the original result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<(String, String)>,
    /// Requests with an `Idempotency-Key` committed into this session:
    /// `(mark, unix time)`, oldest first, for a day and at most
    /// [`MAX_KEY_MARKS`] ([`crate::idempotency`]). Apart from the job marks,
    /// so that neither evicts the other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<(String, i64)>,
    /// The latest keyed turn's mark and sealed response, written with the
    /// turn, for its replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_response: Option<(String, String)>,
    /// Incremented on every write; writes compare and set on it.
    pub version: u64,
}

/// How many committed execution ids a session remembers.
pub const MAX_JOB_MARKS: usize = 16;
/// How many committed idempotency keys a session remembers (each for a day).
pub const MAX_KEY_MARKS: usize = 64;

/// Filters for listing sessions; `org` and `subject` always apply.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub org: String,
    pub subject: String,
    pub user_id: Option<String>,
    pub session_group: Option<String>,
    pub model: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

impl SessionFilter {
    /// Whether `s` is live at `now` and passes every filter: the one session
    /// filter both stores apply.
    pub fn matches(&self, s: &SessionRecord, now: i64) -> bool {
        s.expires_at > now
            && s.org == self.org
            && s.subject == self.subject
            && self
                .user_id
                .as_ref()
                .is_none_or(|u| s.user_id.as_ref() == Some(u))
            && self
                .session_group
                .as_ref()
                .is_none_or(|g| s.session_group.as_ref() == Some(g))
            && self.model.as_ref().is_none_or(|m| &s.model == m)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Pending,
    Running,
    Complete,
    Failed,
}

impl ExecutionStatus {
    /// Statuses only move forward: pending, running, then complete or failed
    /// (terminal; neither replaces the other).
    pub fn rank(self) -> u8 {
        match self {
            ExecutionStatus::Pending => 0,
            ExecutionStatus::Running => 1,
            ExecutionStatus::Complete | ExecutionStatus::Failed => 2,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 2
    }

    /// Whether a record in status `self` may be replaced by one in `next`.
    pub fn may_become(self, next: ExecutionStatus) -> bool {
        !self.is_terminal() && next.rank() >= self.rank()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Complete => "complete",
            ExecutionStatus::Failed => "failed",
        }
    }
}

/// An async execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub org: String,
    pub subject: String,
    pub agent_id: String,
    pub session_id: String,
    pub status: ExecutionStatus,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    /// The sealed result (cv1 envelope) once complete.
    pub result: Option<String>,
    /// `(message, machine code)` once failed.
    pub error: Option<(String, String)>,
    /// The fingerprint of the request that queued it, when it carried an
    /// `Idempotency-Key` (a replay with other content is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// A job taken from the queue. It stays leased to the taker until acked; a
/// lease not renewed for the lease time can be reclaimed by another worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub payload: String,
    /// How many times this job has been handed out, this time included.
    pub deliveries: u64,
}

/// The state of a single-use key (a confirmation cursor) for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: go ahead.
    New,
    /// The same answer again: its stored result, or `None` while the first is still running.
    Repeat(Option<String>),
    /// Another answer was given first.
    Conflict,
}

/// Sessions with compare-and-set and TTLs; execution records with TTLs; a job
/// queue; single-use keys.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Insert a new session; `Exists` if the id is taken.
    async fn create_session(&self, rec: SessionRecord, now: i64) -> Result<(), StoreError>;
    /// A live (unexpired) session by id.
    async fn get_session(&self, id: &str, now: i64) -> Result<Option<SessionRecord>, StoreError>;
    /// Replace a session if its stored version is still `expected`; the stored
    /// version becomes `expected + 1`.
    async fn replace_session(
        &self,
        rec: SessionRecord,
        expected: u64,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn delete_session(&self, id: &str) -> Result<bool, StoreError>;
    /// Live sessions matching `filter`, newest first.
    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        now: i64,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// Write a new execution record (status `pending`).
    async fn put_execution(&self, rec: ExecutionRecord, now: i64) -> Result<(), StoreError>;
    /// Replace an execution record only if its stored status may become
    /// `rec.status` ([`ExecutionStatus::may_become`]), atomically; `false`
    /// when refused (a finished record is never overwritten, so a reclaimed
    /// attempt cannot undo the completion of the one it raced) or gone.
    async fn advance_execution(&self, rec: ExecutionRecord, now: i64) -> Result<bool, StoreError>;
    async fn get_execution(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<ExecutionRecord>, StoreError>;
    async fn delete_execution(&self, id: &str) -> Result<(), StoreError>;
    /// Queue a job payload; `Full` when `max_queued` jobs are already waiting.
    async fn enqueue(&self, payload: String, max_queued: usize) -> Result<(), StoreError>;
    /// Take the next waiting job for `consumer`, waiting up to `wait`.
    async fn next_job(
        &self,
        consumer: &str,
        wait: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError>;
    /// Keep `lease` held by `consumer`; `Conflict` if another consumer has
    /// taken it over (its lease lapsed and was reclaimed): stop working on it.
    async fn renew(&self, consumer: &str, lease: &Lease) -> Result<(), StoreError>;
    /// The job is done (whatever its outcome): remove it from the queue, if
    /// `consumer` still holds it (`Conflict` otherwise: the new holder acks).
    async fn ack(&self, consumer: &str, lease: &Lease) -> Result<(), StoreError>;
    /// Take over one job whose lease was not renewed for `min_idle`, if any.
    async fn reclaim(
        &self,
        consumer: &str,
        min_idle: std::time::Duration,
    ) -> Result<Option<Lease>, StoreError>;
    /// Claim the single use of `key` for `answer`, for `ttl_secs`.
    async fn claim_once(
        &self,
        key: &str,
        answer: &str,
        ttl_secs: u64,
        now: i64,
    ) -> Result<Claim, StoreError>;
    /// Store the result of the claimed use, for repeats of the same answer.
    async fn finish_once(
        &self,
        key: &str,
        result: String,
        ttl_secs: u64,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Give a claimed use back (the attempt failed and may be retried).
    async fn release_once(&self, key: &str) -> Result<(), StoreError>;
    /// Backend name and whether it answers.
    async fn health(&self) -> (&'static str, bool);
    /// Jobs queued and not yet taken by a worker.
    async fn queue_depth(&self) -> Result<u64, StoreError>;
    /// Count one request against the bucket `key` of `per_minute` requests
    /// ([`rate`]); refused (and not counted) when it is empty.
    async fn count_request(&self, key: &str, per_minute: u64) -> Result<Bucket, StoreError>;
    /// Peek at or charge the token bucket `key` of `per_minute` tokens.
    async fn meter_tokens(
        &self,
        key: &str,
        per_minute: u64,
        how: Tokens,
    ) -> Result<Bucket, StoreError>;
    /// Open one of `max` slots of `key` for `id`; `false` when all are open.
    /// A slot left open by a replica that died closes itself after `lease`.
    async fn open_slot(
        &self,
        key: &str,
        id: &str,
        max: u64,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError>;
    async fn close_slot(&self, key: &str, id: &str) -> Result<(), StoreError>;
}
