//! Quant wire types (docs/api.md). Unknown request
//! fields are ignored; `None` response fields are omitted rather than null.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// RFC 3339 UTC timestamp of unix seconds.
pub fn timestamp(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Check a `userId`: NUL would make narrowed subjects ambiguous.
pub fn check_user_id(user_id: Option<&str>) -> Result<(), ApiError> {
    match user_id {
        Some(u) if u.is_empty() || u.len() > 256 || u.contains('\0') => Err(ApiError::invalid(
            "userId must be 1 to 256 bytes without NUL",
        )),
        _ => Ok(()),
    }
}

/// Largest session `metadata`, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest `sessionGroup`.
pub const MAX_GROUP_BYTES: usize = 128;
/// Largest `offset` when listing sessions.
pub const MAX_OFFSET: usize = 10_000;

/// Session metadata is stored in plaintext beside each session: bounded.
pub fn check_metadata(
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), ApiError> {
    let Some(m) = metadata else { return Ok(()) };
    let size = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes of JSON, got {size}"
        )));
    }
    Ok(())
}

pub fn check_group(group: Option<&str>) -> Result<(), ApiError> {
    match group {
        Some(g) if g.is_empty() || g.len() > MAX_GROUP_BYTES || g.contains('\0') => {
            Err(ApiError::invalid(format!(
                "sessionGroup must be 1 to {MAX_GROUP_BYTES} bytes without NUL"
            )))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = QuantChatRequest)]
#[serde(rename_all = "camelCase")]
pub struct ChatRequest {
    /// Required: the user's message (not blank).
    #[serde(default)]
    #[schema(required, example = "Hello")]
    pub message: Option<String>,
    /// The session to continue; none starts one (its id is in the answer).
    #[serde(default)]
    pub session_id: Option<String>,
    /// Narrows the session to one end user (1 to 256 bytes).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Added to the agent's system prompt for this turn.
    #[serde(default)]
    pub system: Option<String>,
    /// Answer with server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Queue the turn and answer 202 with a poll URL (not with `stream`).
    #[serde(default, rename = "async")]
    pub run_async: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = QuantChatResponse)]
#[serde(rename_all = "camelCase")]
pub struct ChatResponse<'a> {
    pub session_id: &'a str,
    pub response: ChatResponseBody<'a>,
    pub tool_results: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatResponseBody<'a> {
    pub text: &'a str,
    pub stop_reason: &'a str,
    pub usage: UsageOut,
    pub tool_results: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// Input tokens read from / written to the provider's prompt cache
    /// (included in `inputTokens`; extra fields the SDK ignores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
}

impl UsageOut {
    /// `usage` on the wire; `with_total` adds `totalTokens` (execution results).
    pub fn new(usage: crate::domain::Usage, with_total: bool) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            total_tokens: match (with_total, usage.input_tokens, usage.output_tokens) {
                (false, _, _) | (true, None, None) => None,
                (true, i, o) => Some(i.unwrap_or(0) + o.unwrap_or(0)),
            },
            cache_read_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted<'a> {
    pub request_id: &'a str,
    pub agent_id: &'a str,
    pub agent_name: &'a str,
    pub session_id: &'a str,
    pub status: &'static str,
    pub message: &'static str,
    pub poll_url: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitialMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSession {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub session_group: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub expiration_minutes: Option<i64>,
    #[serde(default)]
    pub initial_messages: Option<Vec<InitialMessage>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub session_id: String,
    pub status: String,
    pub expires_at: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default, rename = "userId")]
    pub user_id: Option<String>,
    #[serde(default, rename = "sessionGroup")]
    pub session_group: Option<String>,
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub offset: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

/// A session in a listing; the SDK expects snake_case timestamps here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listed {
    pub id: String,
    pub title: String,
    pub model: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(rename = "expiresAt")]
    pub expires_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TranscriptMessage<'a> {
    pub role: &'static str,
    pub content: &'a str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Detail<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub model: &'a str,
    pub messages: Vec<TranscriptMessage<'a>>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(rename = "expiresAt")]
    pub expires_at: String,
    #[serde(rename = "agentId")]
    pub agent_id: &'a str,
    pub status: &'a str,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSession {
    #[serde(default)]
    pub new_messages: Option<Vec<NewMessage>>,
    #[serde(default)]
    pub tokens_used: Option<i64>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Updated {
    pub session_id: String,
    pub status: String,
    pub total_messages: u64,
    pub total_tokens: u64,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtendSession {
    #[serde(default)]
    pub additional_minutes: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Extended {
    pub session_id: String,
    pub expires_at: String,
    pub message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Execution<'a> {
    pub request_id: &'a str,
    pub status: &'static str,
    pub agent_id: &'a str,
    pub session_id: &'a str,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ExecutionResult<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ExecutionError<'a>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionResult<'a> {
    pub response: AssistantResponse<'a>,
    pub usage: UsageOut,
    pub tool_executions: Vec<serde_json::Value>,
    pub session_id: &'a str,
    pub stop_reason: &'a str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssistantResponse<'a> {
    pub role: &'static str,
    pub content: &'a str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExecutionError<'a> {
    #[serde(rename = "ErrorMessage")]
    pub message: &'a str,
    #[serde(rename = "ErrorType")]
    pub kind: &'a str,
}

/// The body of a deleted session's 200.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub message: &'static str,
}

// The path parameters of the Quant routes, for the OpenAPI document (the
// handlers take them as tuples, with the spelling of `organizations` first).

/// `{org}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrgPath {
    /// The organisation (tenant); the path may also spell it `organisations`.
    pub org: String,
}

/// `{org}` and `{agent_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AgentPath {
    /// The organisation (tenant); the path may also spell it `organisations`.
    pub org: String,
    /// The agent.
    pub agent_id: String,
}

/// `{org}` and `{session_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// The organisation (tenant); the path may also spell it `organisations`.
    pub org: String,
    /// The session.
    pub session_id: String,
}

/// `{org}` and `{request_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExecutionPath {
    /// The organisation (tenant); the path may also spell it `organisations`.
    pub org: String,
    /// The execution's `requestId`.
    pub request_id: String,
}
