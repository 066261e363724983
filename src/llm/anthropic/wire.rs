//! Anthropic Messages API wire types, private to this provider. Requests
//! borrow the history; responses are read leniently (unknown block and event
//! types are skipped).

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::domain::{AssistantPart, HistoryItem, UserPart};
use crate::llm::ChatRequest;
use crate::llm::params::{self, CallChoice};

/// The `provider` of the reasoning items this provider writes and reads.
pub const KIND: &str = "anthropic";

/// `max_tokens` is required by the API; this is used when the agent sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Serialize)]
pub struct Request<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<&'a str>,
    pub messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking>,
    pub stream: bool,
    /// The agent's `params`, checked at start to name none of the fields above.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub params: Option<&'a serde_json::Map<String, Value>>,
}

/// `{"type":"auto"|"any"|"none"}` or `{"type":"tool","name":…}`.
#[derive(Serialize)]
pub struct ToolChoiceOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

impl<'a> ToolChoiceOut<'a> {
    fn new(choice: CallChoice<'a>) -> Self {
        let (kind, name) = match choice {
            CallChoice::Auto => ("auto", None),
            CallChoice::Required => ("any", None),
            CallChoice::None => ("none", None),
            CallChoice::Tool(name) => ("tool", Some(name)),
        };
        Self { kind, name }
    }
}

#[derive(Serialize)]
pub struct Thinking {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub budget_tokens: u32,
}

#[derive(Serialize)]
pub struct ToolDef<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub input_schema: &'a Value,
}

#[derive(Serialize)]
pub struct Message<'a> {
    pub role: &'static str,
    pub content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum Block<'a> {
    Typed(TypedBlock<'a>),
    /// A thinking or redacted_thinking block, sent back exactly as received.
    Raw(&'a RawValue),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TypedBlock<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        content: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

#[derive(Serialize)]
pub struct ImageSource<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub media_type: &'a str,
    pub data: &'a str,
}

impl<'a> Request<'a> {
    pub fn new(req: &ChatRequest<'a>, stream: bool) -> Self {
        let thinking = req.thinking_budget.map(|budget_tokens| Thinking {
            kind: "enabled",
            budget_tokens,
        });
        // Thinking is on with the agent's budget or with `params.thinking`.
        let budget = req
            .thinking_budget
            .or_else(|| params::thinking_budget(req.params));
        let max_tokens = match (req.max_tokens, budget) {
            (Some(m), _) => m,
            (None, Some(budget)) => budget.saturating_add(DEFAULT_MAX_TOKENS),
            (None, None) => DEFAULT_MAX_TOKENS,
        };
        Self {
            model: req.model,
            max_tokens,
            system: req.system.filter(|s| !s.is_empty()),
            messages: messages(req.messages),
            // The API refuses a temperature other than 1 with thinking enabled.
            temperature: if budget.is_some() {
                None
            } else {
                req.temperature
            },
            tools: req
                .tools
                .iter()
                .map(|t| ToolDef {
                    name: &t.name,
                    description: &t.description,
                    input_schema: &t.parameters,
                })
                .collect(),
            tool_choice: req
                .tool_choice
                .filter(|_| !req.tools.is_empty())
                .map(ToolChoiceOut::new),
            thinking,
            stream,
            params: req.params,
        }
    }
}

/// The history as alternating user/assistant messages: tool results are user
/// content, consecutive items of one role share a message, and an assistant
/// step's reasoning blocks open its message.
fn messages(history: &[HistoryItem]) -> Vec<Message<'_>> {
    let mut out: Vec<Message<'_>> = Vec::with_capacity(history.len());
    for item in history {
        let (role, blocks): (&'static str, Vec<Block<'_>>) = match item {
            HistoryItem::User { parts } => (
                "user",
                parts
                    .iter()
                    .filter_map(|p| match p {
                        UserPart::Text { text } if text.is_empty() => None,
                        UserPart::Text { text } => Some(Block::Typed(TypedBlock::Text { text })),
                        UserPart::Image { media_type, data } => {
                            Some(Block::Typed(TypedBlock::Image {
                                source: ImageSource {
                                    kind: "base64",
                                    media_type,
                                    data,
                                },
                            }))
                        }
                    })
                    .collect(),
            ),
            HistoryItem::Assistant { parts, tool_calls } => (
                "assistant",
                parts
                    .iter()
                    .filter_map(|AssistantPart::Text { text }| {
                        (!text.is_empty()).then_some(Block::Typed(TypedBlock::Text { text }))
                    })
                    .chain(tool_calls.iter().map(|c| {
                        Block::Typed(TypedBlock::ToolUse {
                            id: &c.id,
                            name: &c.name,
                            input: tool_input(&c.arguments),
                        })
                    }))
                    .collect(),
            ),
            HistoryItem::ToolResult {
                call_id,
                content,
                is_error,
                ..
            } => (
                "user",
                vec![Block::Typed(TypedBlock::ToolResult {
                    tool_use_id: call_id,
                    content,
                    is_error: *is_error,
                })],
            ),
            HistoryItem::Reasoning { provider, blob } if provider == KIND => {
                match serde_json::from_str::<&RawValue>(blob) {
                    Ok(raw) => ("assistant", vec![Block::Raw(raw)]),
                    Err(_) => continue,
                }
            }
            // Other providers' reasoning cannot be sent here.
            HistoryItem::Reasoning { .. } => continue,
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => out.push(Message {
                role,
                content: blocks,
            }),
        }
    }
    out
}

/// `{}`, for tool calls whose arguments are not a JSON object.
static EMPTY_OBJECT: LazyLock<Box<RawValue>> = LazyLock::new(|| {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
});

/// A tool call's arguments as the object the API requires, borrowed from the
/// history without building a JSON tree (`{}` when the model wrote something
/// else; the tool result already told it so).
fn tool_input(arguments: &str) -> &RawValue {
    match serde_json::from_str::<&RawValue>(arguments) {
        Ok(raw) if raw.get().starts_with('{') => raw,
        _ => &EMPTY_OBJECT,
    }
}

#[derive(Deserialize)]
pub struct Response {
    #[serde(default)]
    pub content: Vec<Value>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Option<UsageIn>,
}

/// Usage as the API reports it; in a stream, `message_delta` values are cumulative.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageIn {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl UsageIn {
    /// Overwrite the fields `newer` reports.
    pub fn merge(&mut self, newer: UsageIn) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = newer
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = newer
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }
}

/// `message_start`.
#[derive(Deserialize)]
pub struct MessageStart {
    pub message: MessageStartBody,
}

#[derive(Deserialize)]
pub struct MessageStartBody {
    #[serde(default)]
    pub usage: Option<UsageIn>,
}

/// `content_block_start`.
#[derive(Deserialize)]
pub struct BlockStart {
    pub index: usize,
    pub content_block: Value,
}

/// `content_block_delta`.
#[derive(Deserialize)]
pub struct BlockDelta {
    pub index: usize,
    pub delta: Value,
}

/// `content_block_stop`.
#[derive(Deserialize)]
pub struct BlockStop {
    pub index: usize,
}

/// `message_delta`.
#[derive(Deserialize)]
pub struct MessageDelta {
    #[serde(default)]
    pub delta: Option<MessageDeltaBody>,
    #[serde(default)]
    pub usage: Option<UsageIn>,
}

#[derive(Deserialize)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
}

/// `error` (in a stream) and every error response body.
#[derive(Deserialize)]
pub struct ErrorEvent {
    pub error: ErrorBody,
}

#[derive(Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type", default)]
    pub kind: String,
}
