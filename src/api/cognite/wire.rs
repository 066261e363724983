//! Cognite wire types (docs/api.md) and their validation into domain types.
//! `stream: true` asks for server-sent events; unknown request fields are
//! ignored (`retentionPolicy`, and whatever later API versions add).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::domain::{HistoryItem, UserPart};
use crate::error::{ApiError, ErrorCode};

pub const MAX_MESSAGES: usize = 1000;
pub const MAX_IMAGES: usize = 20;
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
pub const IMAGE_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/webp"];

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CogniteChatRequest)]
#[serde(rename_all = "camelCase")]
pub struct ChatRequest {
    /// The agent (required unless `agentId` is given).
    #[serde(default)]
    #[schema(example = "support")]
    pub agent_external_id: Option<String>,
    /// Another name for `agentExternalId`.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Required: 1 to 1000 items, new user messages (`role: user`) and
    /// answers to the pending actions of the previous turn (`role: action`).
    #[serde(default)]
    #[schema(required)]
    pub messages: Option<Vec<Message>>,
    /// The cursor of the previous turn's answer; none to start a conversation.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Client tool definitions, re-sent by the client every turn.
    #[serde(default)]
    pub actions: Option<Vec<WireAction>>,
    /// Answer with server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WireAction {
    /// `clientTool`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub client_tool: Option<WireClientTool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WireClientTool {
    /// The tool's name, `^[A-Za-z0-9_-]{1,64}$`, unique in the request.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON Schema for an object: the call's arguments.
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// `user` or `action` (an answer to a pending action).
    #[serde(default)]
    #[schema(example = "user")]
    pub role: Option<String>,
    /// A content item or a list of them (a user message's text and images,
    /// or a client tool's result).
    #[serde(default)]
    pub content: Option<Content>,
    /// Action results: `clientTool` (or `toolConfirmation`, `userSession`).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub action_id: Option<String>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// `ALLOW` or `DENY`, for `toolConfirmation` results.
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Content {
    One(ContentItem),
    Many(Vec<ContentItem>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContentItem {
    /// `text` or `image`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// An image's bytes, base64 (at most 5 MiB decoded, 20 images a request).
    #[serde(default)]
    pub data: Option<String>,
    /// An image's type: `image/png`, `image/jpeg` or `image/webp`.
    #[serde(default)]
    pub media_type: Option<String>,
}

pub const MAX_ACTIONS: usize = 10;

/// A validated chat request.
#[derive(Debug)]
pub struct ValidChat {
    pub agent: String,
    pub cursor: Option<String>,
    /// New user messages, in order.
    pub messages: Vec<HistoryItem>,
    /// Answers to pending client tool calls.
    pub answers: Vec<ActionAnswer>,
    /// Client tools offered this turn.
    pub client_tools: Vec<ClientTool>,
    pub stream: bool,
}

/// The client's answer to one pending action.
#[derive(Debug, Clone)]
pub struct ActionAnswer {
    pub action_id: String,
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A `clientTool` result.
    ClientTool(String),
    /// A `toolConfirmation` decision: `true` for ALLOW.
    Confirmation(bool),
}

/// A client tool definition, checked.
#[derive(Debug, Clone)]
pub struct ClientTool {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

fn client_tool(i: usize, a: WireAction) -> Result<ClientTool, ApiError> {
    let at = format!("actions[{i}]");
    match a.kind.as_deref() {
        Some("clientTool") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "{at}.type {other:?} is not supported; use \"clientTool\""
            )));
        }
        None => return Err(ApiError::invalid(format!("{at}.type is required"))),
    }
    let t = a
        .client_tool
        .ok_or_else(|| ApiError::invalid(format!("{at}.clientTool is required")))?;
    let name = t
        .name
        .ok_or_else(|| ApiError::invalid(format!("{at}.clientTool.name is required")))?;
    if !crate::ids::is_tool_name(&name) {
        return Err(ApiError::invalid(format!(
            "{at}.clientTool.name {:?} must match {}",
            crate::error::prefix(&name, 80),
            crate::ids::TOOL_NAME_PATTERN
        )));
    }
    let parameters = t
        .parameters
        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
    let is_object_schema = parameters.is_object()
        && parameters.get("type").is_none_or(|ty| ty == "object")
        && jsonschema::validator_for(&parameters).is_ok();
    if !is_object_schema {
        return Err(ApiError::invalid(format!(
            "{at}.clientTool.parameters must be a JSON Schema for an object"
        )));
    }
    Ok(ClientTool {
        name,
        description: t.description.unwrap_or_default(),
        parameters,
    })
}

/// The text of a client tool result: its text content, plus its data as JSON.
fn answer_text(content: Option<Content>, data: Option<serde_json::Value>) -> String {
    let mut text = match content {
        Some(Content::One(item)) => item.text.unwrap_or_default(),
        Some(Content::Many(items)) => items
            .into_iter()
            .filter_map(|i| i.text)
            .collect::<Vec<_>>()
            .join("\n"),
        None => String::new(),
    };
    if let Some(d) = data.filter(|d| !d.is_null() && d.as_array().is_none_or(|a| !a.is_empty())) {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&d.to_string());
    }
    text
}

impl ChatRequest {
    /// Check the request and turn it into domain input.
    pub fn validate(self) -> Result<ValidChat, ApiError> {
        let agent = self
            .agent_external_id
            .or(self.agent_id)
            .ok_or_else(|| ApiError::invalid("agentExternalId is required"))?;
        if agent.is_empty() || agent.chars().count() > 128 || agent.contains('\0') {
            return Err(ApiError::invalid(
                "agentExternalId must be 1 to 128 characters without NUL",
            ));
        }
        let messages = self
            .messages
            .ok_or_else(|| ApiError::invalid("messages is required"))?;
        if messages.is_empty() || messages.len() > MAX_MESSAGES {
            return Err(ApiError::invalid(format!(
                "messages must have 1 to {MAX_MESSAGES} items, got {}",
                messages.len()
            )));
        }
        let actions = self.actions.unwrap_or_default();
        if actions.len() > MAX_ACTIONS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_ACTIONS} actions are allowed, got {}",
                actions.len()
            )));
        }
        let client_tools = actions
            .into_iter()
            .enumerate()
            .map(|(i, a)| client_tool(i, a))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, t) in client_tools.iter().enumerate() {
            if client_tools[..i].iter().any(|o| o.name == t.name) {
                return Err(ApiError::invalid(format!(
                    "actions[{i}]: the client tool name {:?} is used twice",
                    t.name
                )));
            }
        }
        let mut images = 0;
        let mut items = Vec::new();
        let mut answers = Vec::new();
        for (i, m) in messages.into_iter().enumerate() {
            if m.role.as_deref() == Some("action") {
                answers.push(action_answer(i, m)?);
            } else {
                items.push(user_message(i, m, &mut images)?);
            }
        }
        Ok(ValidChat {
            agent,
            cursor: self.cursor,
            messages: items,
            answers,
            client_tools,
            stream: self.stream.unwrap_or(false),
        })
    }
}

fn action_answer(i: usize, m: Message) -> Result<ActionAnswer, ApiError> {
    let action_id = m
        .action_id
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::invalid(format!("messages[{i}].actionId is required")))?;
    let answer = match m.kind.as_deref() {
        Some("clientTool") => Answer::ClientTool(answer_text(m.content, m.data)),
        Some("toolConfirmation") => match m.status.as_deref() {
            Some("ALLOW") => Answer::Confirmation(true),
            Some("DENY") => Answer::Confirmation(false),
            _ => {
                return Err(ApiError::invalid(format!(
                    "messages[{i}].status must be \"ALLOW\" or \"DENY\""
                )));
            }
        },
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::ActionsNotSupported,
                format!(
                    "messages[{i}]: {other:?} action results are not supported by this gateway"
                ),
            ));
        }
        None => {
            return Err(ApiError::invalid(format!(
                "messages[{i}].type is required for an action result"
            )));
        }
    };
    Ok(ActionAnswer { action_id, answer })
}

fn user_message(i: usize, m: Message, images: &mut usize) -> Result<HistoryItem, ApiError> {
    match m.role.as_deref() {
        Some("user") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "messages[{i}].role {other:?} is not supported; use \"user\""
            )));
        }
        None => return Err(ApiError::invalid(format!("messages[{i}].role is required"))),
    }
    let items = match m.content {
        None => {
            return Err(ApiError::invalid(format!(
                "messages[{i}].content is required"
            )));
        }
        Some(Content::One(item)) => vec![item],
        Some(Content::Many(items)) if items.is_empty() => {
            return Err(ApiError::invalid(format!(
                "messages[{i}].content must not be empty"
            )));
        }
        Some(Content::Many(items)) => items,
    };
    let parts = items
        .into_iter()
        .enumerate()
        .map(|(j, item)| part(i, j, item, images))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HistoryItem::User { parts })
}

fn part(i: usize, j: usize, item: ContentItem, images: &mut usize) -> Result<UserPart, ApiError> {
    let at = format!("messages[{i}].content[{j}]");
    match item.kind.as_deref() {
        Some("text") => {
            let text = item
                .text
                .ok_or_else(|| ApiError::invalid(format!("{at}.text is required")))?;
            Ok(UserPart::Text { text })
        }
        Some("image") => {
            *images += 1;
            if *images > MAX_IMAGES {
                return Err(ApiError::invalid(format!(
                    "at most {MAX_IMAGES} images are allowed per request"
                )));
            }
            let media_type = item
                .media_type
                .ok_or_else(|| ApiError::invalid(format!("{at}.mediaType is required")))?;
            if !IMAGE_TYPES.contains(&media_type.as_str()) {
                return Err(ApiError::invalid(format!(
                    "{at}.mediaType {media_type:?} is not supported; use one of {}",
                    IMAGE_TYPES.join(", ")
                )));
            }
            let data = item
                .data
                .ok_or_else(|| ApiError::invalid(format!("{at}.data is required")))?;
            // Check the size before decoding: 4 base64 chars carry 3 bytes.
            if data.len() / 4 * 3 > MAX_IMAGE_BYTES + 3 {
                return Err(ApiError::invalid(format!(
                    "{at}: images may be at most {MAX_IMAGE_BYTES} bytes"
                )));
            }
            let decoded = STANDARD
                .decode(&data)
                .map_err(|_| ApiError::invalid(format!("{at}.data is not valid base64")))?;
            if decoded.len() > MAX_IMAGE_BYTES {
                return Err(ApiError::invalid(format!(
                    "{at}: images may be at most {MAX_IMAGE_BYTES} bytes"
                )));
            }
            Ok(UserPart::Image { media_type, data })
        }
        Some(other) => Err(ApiError::invalid(format!(
            "{at}.type {other:?} is not supported; use \"text\" or \"image\""
        ))),
        None => Err(ApiError::invalid(format!("{at}.type is required"))),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CogniteChatResponse)]
#[serde(rename_all = "camelCase")]
pub struct ChatResponse<'a> {
    pub agent_external_id: &'a str,
    pub agent_id: &'a str,
    pub response: ResponseBody<'a>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResponseBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub cursor: &'a str,
    pub messages: Vec<AgentMessage<'a>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentMessage<'a> {
    pub role: &'static str,
    pub content: AgentContent<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasoning: Vec<Reasoning>,
}

/// One content object, or a list when there is more than one part.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum AgentContent<'a> {
    One(TextContent<'a>),
    Many(Vec<TextContent<'a>>),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reasoning {
    pub content: Vec<serde_json::Value>,
    pub data: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TextContent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
}

/// The Cognite `toolType` of a tool of `origin`.
pub fn tool_type(origin: crate::tools::ToolOrigin) -> &'static str {
    use crate::tools::ToolOrigin;
    match origin {
        ToolOrigin::Builtin => "builtin",
        ToolOrigin::Http => "callRestApi",
        ToolOrigin::Mcp => "mcp",
        ToolOrigin::Client => "clientTool",
        ToolOrigin::Unknown => "unknown",
    }
}

#[cfg(test)]
mod property_tests {
    use proptest::prelude::*;

    use super::ChatRequest;

    proptest! {
        /// Whatever JSON a client sends, parsing and validation answer
        /// (an error or a request) without panicking.
        #[test]
        fn any_json_body_is_parsed_or_refused_without_panicking(body in crate::testkit::json()) {
            let bytes = serde_json::to_vec(&body).unwrap();
            if let Ok(request) = crate::api::body::parse_json::<ChatRequest>(&bytes) {
                let _ = request.validate();
            }
        }

        /// Arbitrary bytes as a body: an error, never a panic.
        #[test]
        fn any_bytes_are_refused_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = crate::api::body::parse_json::<ChatRequest>(&bytes);
            let _ = crate::api::body::parse_json::<crate::api::quant::wire::ChatRequest>(&bytes);
        }

        #[test]
        fn any_json_quant_body_is_parsed_or_refused_without_panicking(body in crate::testkit::json()) {
            let bytes = serde_json::to_vec(&body).unwrap();
            let _ = crate::api::body::parse_json::<crate::api::quant::wire::ChatRequest>(&bytes);
            let _ = crate::api::body::parse_json::<crate::api::quant::wire::CreateSession>(&bytes);
            let _ = crate::api::body::parse_json::<crate::api::quant::wire::UpdateSession>(&bytes);
        }
    }
}
