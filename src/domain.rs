//! API- and provider-neutral conversation types.
//!
//! These types are also the cursor claims schema (`hist` and `pending`, see
//! docs/cursor-claims.md): every struct denies unknown fields, and any change
//! to their serialized form bumps the claims version `v`.

use serde::{Deserialize, Serialize};

/// One part of a user message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UserPart {
    Text {
        text: String,
    },
    /// Base64 image data (standard alphabet) with its media type.
    Image {
        media_type: String,
        data: String,
    },
}

/// One part of an assistant message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AssistantPart {
    Text { text: String },
}

/// A tool call made by the model. `arguments` is the JSON text the model wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One item of conversation history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HistoryItem {
    User {
        parts: Vec<UserPart>,
    },
    Assistant {
        parts: Vec<AssistantPart>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    ToolResult {
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
    },
    /// An opaque provider reasoning blob that must be sent back to that provider.
    Reasoning {
        provider: String,
        blob: String,
    },
}

impl HistoryItem {
    /// A user message made of one text part.
    pub fn user_text(text: impl Into<String>) -> Self {
        HistoryItem::User {
            parts: vec![UserPart::Text { text: text.into() }],
        }
    }

    /// An assistant message made of one text part and no tool calls.
    pub fn assistant_text(text: impl Into<String>) -> Self {
        HistoryItem::Assistant {
            parts: vec![AssistantPart::Text { text: text.into() }],
            tool_calls: Vec::new(),
        }
    }

    /// Whether this item starts a turn (a user message).
    pub fn starts_turn(&self) -> bool {
        matches!(self, HistoryItem::User { .. })
    }
}

/// What kind of answer a pending action waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PendingKind {
    ClientTool,
    ToolConfirmation,
}

/// A tool call handed back to the client, waiting for its answer on the next turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingAction {
    pub action_id: String,
    pub kind: PendingKind,
    pub call_id: String,
    pub name: String,
    pub arguments: String,
}

/// The whole state of one conversation, as sealed into a cursor.
///
/// It never holds the system prompt, credentials or access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationState {
    /// Conversation id (base64url of 16 random bytes), stable across turns.
    pub id: String,
    /// Number of completed turns.
    pub turn: u64,
    /// Conversation start, unix seconds.
    pub started_at: i64,
    /// Hash of the agent configuration used by the latest turn.
    pub cfg: String,
    pub history: Vec<HistoryItem>,
    pub pending: Vec<PendingAction>,
}

impl ConversationState {
    /// A new, empty conversation started at `now`.
    pub fn new(now: i64, cfg: impl Into<String>) -> Self {
        use base64::Engine;
        let id: [u8; 16] = rand::random();
        Self {
            id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id),
            turn: 0,
            started_at: now,
            cfg: cfg.into(),
            history: Vec::new(),
            pending: Vec::new(),
        }
    }
}

/// Token usage. `None` means the upstream did not report it.
///
/// `input_tokens` counts every prompt token, cached or not (OpenAI's
/// `prompt_tokens`; Anthropic's `input_tokens` plus both cache counts);
/// `cache_read_tokens` and `cache_write_tokens` are the parts of it that were
/// read from or written to the provider's prompt cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
}

impl Usage {
    /// Tokens in and out, as rate limits count them.
    pub fn billed(&self) -> u64 {
        self.input_tokens
            .unwrap_or(0)
            .saturating_add(self.output_tokens.unwrap_or(0))
    }

    /// Add another step's usage; a field stays `None` only if neither reported it.
    pub fn add(&mut self, other: Usage) {
        fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (None, None) => None,
                // Counts come from upstreams: saturate rather than overflow.
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            }
        }
        self.input_tokens = sum(self.input_tokens, other.input_tokens);
        self.output_tokens = sum(self.output_tokens, other.output_tokens);
        self.cache_read_tokens = sum(self.cache_read_tokens, other.cache_read_tokens);
        self.cache_write_tokens = sum(self.cache_write_tokens, other.cache_write_tokens);
    }

    /// Whether no field was reported.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

#[cfg(test)]
mod usage_tests {
    use super::Usage;

    #[test]
    fn hostile_token_counts_saturate() {
        let mut u = Usage {
            input_tokens: Some(u64::MAX - 1),
            ..Default::default()
        };
        u.add(Usage {
            input_tokens: Some(u64::MAX),
            output_tokens: Some(3),
            ..Default::default()
        });
        assert_eq!(u.input_tokens, Some(u64::MAX));
        assert_eq!(u.output_tokens, Some(3));
        assert_eq!(u.cache_read_tokens, None);
    }
}

/// Why a turn stopped, normalised across providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    MaxSteps,
    Deadline,
    ClientAction,
    ContentFilter,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::MaxSteps => "max_steps",
            StopReason::Deadline => "deadline",
            StopReason::ClientAction => "client_action",
            StopReason::ContentFilter => "content_filter",
        }
    }
}
