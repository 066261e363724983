//! The one error table shared by both API shapes (docs/api.md): every failure
//! a client can see has a stable machine code and an HTTP status. Layer errors
//! convert into [`ApiError`]; each facade renders it in its own body format.

use actix_web::http::StatusCode;

use crate::cursor::CursorError;
use crate::llm::ProviderError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

/// Stable machine codes, with their HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    InvalidCursor,
    CursorExpired,
    CursorTooLarge,
    ConversationExpired,
    ActionsNotSupported,
    AgentNotFound,
    SessionNotFound,
    ExecutionNotFound,
    NotFound,
    MethodNotAllowed,
    Conflict,
    BodyTooLarge,
    RequestTimeout,
    UnsupportedEncoding,
    UnsupportedMediaType,
    ConversationTooLarge,
    UpstreamRejected,
    UpstreamRateLimited,
    RateLimited,
    Internal,
    ProviderMisconfigured,
    UpstreamError,
    NotImplemented,
    StoreUnavailable,
    QueueFull,
    NotReady,
    UpstreamTimeout,
    UpstreamUnavailable,
    IdempotencyKeyReused,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 32] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::InvalidCursor,
        ErrorCode::CursorExpired,
        ErrorCode::CursorTooLarge,
        ErrorCode::ConversationExpired,
        ErrorCode::ActionsNotSupported,
        ErrorCode::AgentNotFound,
        ErrorCode::SessionNotFound,
        ErrorCode::ExecutionNotFound,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::BodyTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::UnsupportedEncoding,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ConversationTooLarge,
        ErrorCode::UpstreamRejected,
        ErrorCode::UpstreamRateLimited,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::ProviderMisconfigured,
        ErrorCode::UpstreamError,
        ErrorCode::NotImplemented,
        ErrorCode::StoreUnavailable,
        ErrorCode::QueueFull,
        ErrorCode::NotReady,
        ErrorCode::UpstreamTimeout,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::IdempotencyKeyReused,
    ];

    /// The machine code clients match on.
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.row().1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn row(self) -> (&'static str, u16) {
        match self {
            ErrorCode::InvalidRequest => ("invalid_request", 400),
            ErrorCode::Unauthorized => ("unauthorized", 401),
            ErrorCode::Forbidden => ("forbidden", 403),
            ErrorCode::InvalidCursor => ("invalid_cursor", 400),
            ErrorCode::CursorExpired => ("cursor_expired", 400),
            ErrorCode::CursorTooLarge => ("cursor_too_large", 400),
            ErrorCode::ConversationExpired => ("conversation_expired", 400),
            ErrorCode::ActionsNotSupported => ("actions_not_supported", 400),
            ErrorCode::AgentNotFound => ("agent_not_found", 404),
            ErrorCode::SessionNotFound => ("session_not_found", 404),
            ErrorCode::ExecutionNotFound => ("execution_not_found", 404),
            ErrorCode::NotFound => ("not_found", 404),
            ErrorCode::MethodNotAllowed => ("method_not_allowed", 405),
            ErrorCode::Conflict => ("conflict", 409),
            ErrorCode::BodyTooLarge => ("body_too_large", 413),
            ErrorCode::RequestTimeout => ("request_timeout", 408),
            ErrorCode::UnsupportedEncoding => ("unsupported_encoding", 415),
            ErrorCode::UnsupportedMediaType => ("unsupported_media_type", 415),
            ErrorCode::ConversationTooLarge => ("conversation_too_large", 422),
            ErrorCode::UpstreamRejected => ("upstream_rejected", 422),
            ErrorCode::UpstreamRateLimited => ("upstream_rate_limited", 429),
            ErrorCode::RateLimited => ("rate_limited", 429),
            ErrorCode::Internal => ("internal_error", 500),
            ErrorCode::ProviderMisconfigured => ("provider_misconfigured", 500),
            ErrorCode::UpstreamError => ("upstream_error", 502),
            ErrorCode::NotImplemented => ("not_implemented", 501),
            ErrorCode::StoreUnavailable => ("store_unavailable", 503),
            ErrorCode::QueueFull => ("queue_full", 503),
            ErrorCode::NotReady => ("not_ready", 503),
            ErrorCode::UpstreamTimeout => ("upstream_timeout", 504),
            ErrorCode::UpstreamUnavailable => ("upstream_unavailable", 503),
            ErrorCode::IdempotencyKeyReused => ("idempotency_key_reused", 422),
        }
    }
}

/// A client-visible error: code, safe message, and optional extras.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
    /// External ids that were not found (Cognite `missing`).
    pub missing: Vec<String>,
}

/// Longest client-visible error message, bytes: messages that quote client
/// input must never echo a large body back.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// At most `max` bytes of `s` (cut on a character boundary), with `…` when cut.
pub fn prefix(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    format!("{}…", &s[..s.floor_char_boundary(max)]).into()
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.len() > MAX_MESSAGE_BYTES {
            message = prefix(&message, MAX_MESSAGE_BYTES).into_owned();
        }
        Self {
            code,
            message,
            retry_after: None,
            missing: Vec::new(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn agent_not_found(id: &str) -> Self {
        let mut e = Self::new(ErrorCode::AgentNotFound, format!("agent {id:?} not found"));
        e.missing.push(id.to_owned());
        e
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ApiError {
    /// A record the gateway stored itself (a session state, a job's input or
    /// result) failed to open. The client sent no cursor, so this is never a
    /// cursor error: an expired record is gone (`gone`, a 404 code), and
    /// anything else is a fault on our side (500, logged with the reason).
    pub fn from_stored(e: CursorError, what: &str, gone: ErrorCode) -> ApiError {
        match e {
            CursorError::Expired => ApiError::new(gone, format!("the {what} has expired")),
            CursorError::ConversationExpired => e.into(),
            other => {
                tracing::error!(reason = %other, what, "a stored record could not be opened");
                ApiError::new(
                    ErrorCode::Internal,
                    format!("the stored {what} could not be read"),
                )
            }
        }
    }
}

impl From<crate::app::AgentError> for ApiError {
    fn from(e: crate::app::AgentError) -> Self {
        match e {
            crate::app::AgentError::NotFound(id) => ApiError::agent_not_found(&id),
            crate::app::AgentError::NoProvider => ApiError::new(
                ErrorCode::ProviderMisconfigured,
                "the agent's provider is not configured",
            ),
        }
    }
}

impl From<crate::sessions::SessionError> for ApiError {
    fn from(e: crate::sessions::SessionError) -> Self {
        use crate::sessions::SessionError as E;
        match e {
            E::NotFound => ApiError::new(ErrorCode::SessionNotFound, "session not found"),
            E::Unreadable(reason) => {
                tracing::error!(%reason, "a stored session state could not be opened");
                ApiError::new(ErrorCode::Internal, "the stored session could not be read")
            }
            E::Result(reason) => {
                tracing::error!(%reason, "an execution result could not be sealed");
                ApiError::new(ErrorCode::Internal, "the result could not be stored")
            }
            E::KeyReused => ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used for a different request; use a new key",
            ),
            E::ResponseGone => ApiError::new(
                ErrorCode::Conflict,
                "this request was already applied, and its response is no longer kept \
                 (a later turn of the session replaced it, or it is over a day old)",
            ),
            E::Cursor(e) => e.into(),
            E::Store(e) => e.into(),
            E::Turn(e) => e.into(),
            E::Agent(e) => e.into(),
        }
    }
}

impl From<crate::jobs::JobError> for ApiError {
    fn from(e: crate::jobs::JobError) -> Self {
        use crate::jobs::JobError as E;
        match e {
            E::Agent(e) => e.into(),
            E::Session(e) => e.into(),
            E::Store(e) => e.into(),
            E::QueueFull => {
                let mut err = ApiError::new(
                    ErrorCode::QueueFull,
                    "too many queued async requests; retry later",
                );
                err.retry_after = Some(5);
                err
            }
            E::InputTooLarge => ApiError::new(
                ErrorCode::BodyTooLarge,
                "the message and system prompt of an async request must fit in 1 MiB together",
            ),
            E::NotFound => ApiError::new(ErrorCode::ExecutionNotFound, "execution not found"),
            E::Unreadable(reason) => {
                tracing::error!(%reason, "a stored execution blob could not be read");
                ApiError::new(
                    ErrorCode::Internal,
                    "the stored execution could not be read",
                )
            }
            E::ResultLost => ApiError::new(ErrorCode::Internal, E::ResultLost.to_string()),
        }
    }
}

impl From<CursorError> for ApiError {
    fn from(e: CursorError) -> Self {
        match e {
            // One body for every authentication failure: nothing tells a forger which check failed.
            CursorError::Invalid(_) => ApiError::new(
                ErrorCode::InvalidCursor,
                "the cursor is not valid for this project, agent and caller; start a new conversation",
            ),
            CursorError::Expired => ApiError::new(
                ErrorCode::CursorExpired,
                "the cursor has expired; start a new conversation",
            ),
            CursorError::TooLarge => ApiError::new(
                ErrorCode::CursorTooLarge,
                "the cursor is longer than any valid cursor",
            ),
            CursorError::ConversationExpired => ApiError::new(
                ErrorCode::ConversationExpired,
                "the conversation is older than the maximum conversation age; start a new conversation",
            ),
            CursorError::ConversationTooLarge => ApiError::new(
                ErrorCode::ConversationTooLarge,
                "the conversation has grown too large to continue; start a new conversation",
            ),
        }
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Rejected { .. } => ApiError::new(
                ErrorCode::UpstreamRejected,
                "the model provider rejected the request",
            ),
            ProviderError::Misconfigured { .. } | ProviderError::Config(_) => ApiError::new(
                ErrorCode::ProviderMisconfigured,
                "the model provider is misconfigured; contact the gateway operator",
            ),
            ProviderError::RateLimited { retry_after } => {
                let mut err = ApiError::new(
                    ErrorCode::UpstreamRateLimited,
                    "the model provider is rate limiting requests; retry later",
                );
                err.retry_after = Some(retry_seconds(retry_after));
                err
            }
            ProviderError::Overloaded { retry_after } => {
                let mut err = ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "the model provider is overloaded; retry later",
                );
                err.retry_after = Some(retry_seconds(retry_after));
                err
            }
            ProviderError::CircuitOpen { retry_after } => {
                let mut err = ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "the model providers are failing and are being given time to recover; retry later",
                );
                err.retry_after = Some(retry_seconds(Some(retry_after)));
                err
            }
            ProviderError::Upstream(_) | ProviderError::Transient(_) => ApiError::new(
                ErrorCode::UpstreamError,
                "the model provider failed to answer",
            ),
            ProviderError::Timeout(_) => ApiError::new(
                ErrorCode::UpstreamTimeout,
                "the model provider did not answer in time",
            ),
        }
    }
}

/// A `Retry-After` in whole seconds (rounded up, 1 to 3600; 1 when unknown).
fn retry_seconds(d: Option<std::time::Duration>) -> u64 {
    d.map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .clamp(1, 3600)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict | StoreError::Exists => ApiError::new(
                ErrorCode::Conflict,
                "the session was changed by another request at the same time; retry",
            ),
            StoreError::Full | StoreError::Unavailable(_) => {
                let mut err = ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "the session store is unavailable; retry later",
                );
                err.retry_after = Some(1);
                err
            }
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Provider(p) => p.into(),
        }
    }
}
